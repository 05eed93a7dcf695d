"""`mgfen-eval`: metrics, heatmap overlays and a JSON report for a checkpoint on a data folder."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_runtime.cli.cli_errors import OutputPath, error_boundary
from train.enhance.blend import BLEND_MODES
from train.evaluate.bg_suite import format_results
from train.evaluate.risk_coverage import format_table
from train.fit.thresholds import describe_fit, span

# Options `mgfen-eval` adds for the suite (applied as a decorator).
def bg_suite_options(func):
    options = [
        click.option("--bg-suite", is_flag=True,
                     help="Background-reliance suite: original, only_fg, no_fg, mixed_same/rand/next, BG-Gap, "
                          "adversarial backgrounds (needs DATA/masks)."),
        click.option("--bg-m", type=click.IntRange(0, 1000), default=10, show_default=True,
                     help="Adversarial backgrounds tried per image."),
        click.option("--bg-blend", type=click.Choice(BLEND_MODES), default="hard", show_default=True,
                     help="Compositing of the suite's mixed variants."),
        click.option("--bg-source", type=click.Choice(["auto", "manifest", "inpaint"]), default="auto", show_default=True,
                     help="Where an image's background comes from (see train.evaluate.bg_suite)."),
        click.option("--masks", "masks_dir", type=click.Path(file_okay=False), default=None,
                     help="Masks folder (default DATA/masks)."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def print_bg_suite(result: dict) -> None:
    """Human-readable lines of a bg_suite_report result."""
    click.echo(f"background suite on {result['split']} (n {result['n']}, backgrounds: {result['background_source']})")
    click.echo(format_results(result))


EXAMPLES = """
\b
Examples:
  mgfen-eval --ckpt runs/edge/best.pt --data data/synth
  mgfen-eval --ckpt runs/edge/best.pt --data data/synth --split val --out runs/edge/eval_val --samples 16
  mgfen-eval --ckpt runs/edge/best.pt --data data/synth --baselines
  mgfen-eval --ckpt runs/edge/best.pt --data data/synth --ood photos/textures --out runs/edge/eval_ood
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ckpt", required=True, type=click.Path(), help="Checkpoint (RUN/best.pt).")
@click.option("--data", required=True, type=click.Path(), help="Data folder.")
@click.option("--split", type=click.Choice(["train", "val", "test", "all"]), default="test", show_default=True)
@click.option("--out", type=OutputPath(folder=True), default=None,
              help="Folder for report.json and overlays (default: none written).")
@click.option("--samples", type=click.IntRange(min=0), default=8, show_default=True, help="Heatmap overlays to draw.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Split seed for folders without splits.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--baselines", is_flag=True,
              help="Also fit the shortcut baselines and the linear probe on the train split, score them on --split "
                   "and compare.")
@click.option("--probe-sizes", default=None,
              help="With --baselines: linear-probe input sides, comma-separated, or 'none' [default: as mgfen-data "
                   "audit].")
@click.option("--ood", type=click.Path(), default=None,
              help="Folder of images unlike the training set: `unknown` refusal rate there and false refusal on "
                   "--split, with 95% intervals; with --out also a histogram picture of both sets' novelty scores "
                   "with the threshold marked.")
@bg_suite_options
@error_boundary
def main(ckpt, data, split, out, samples, device, batch, seed, as_json, baselines, probe_sizes, ood, bg_suite, bg_m,
         bg_blend, bg_source, masks_dir) -> None:
    """Evaluate a checkpoint: accuracy, precision, recall, F1, ROC-AUC, confusion matrix; at the checkpoint's
    decision thresholds coverage, accuracy on decided items and counterfeit recall; the risk-coverage table
    (and picture in --out); heatmap overlays."""
    if bg_suite:
        from train.evaluate.bg_report import bg_suite_report

        result = bg_suite_report(Path(ckpt), Path(data), split=split, out=Path(out) if out else None,
                                 device=device, batch=batch, adversarial_m=bg_m, blend=bg_blend,
                                 background_source=bg_source, masks=Path(masks_dir) if masks_dir else None,
                                 seed=seed, progress=lambda line: click.echo(f"bg-suite: {line}", err=True))
        if as_json:
            click.echo(json.dumps(result, indent=2))
        else:
            print_bg_suite(result)
        return
    from train.evaluate.report import evaluate_checkpoint

    if baselines:
        from train.evaluate.vs_baselines import check_split

        check_split(split)  # before any model runs
    if ood is not None:
        from train.evaluate.ood import ood_images

        ood_images(Path(ood))  # a bad folder fails before the evaluation
    report = evaluate_checkpoint(Path(ckpt), Path(data), split=split, out=Path(out) if out else None,
                                 device=device, batch=batch, samples=samples, seed=seed)
    if baselines:
        from train.audit.probe import DEFAULT_PROBE_SIZES, parse_probe_sizes
        from train.evaluate.vs_baselines import baselines_vs_checkpoint

        sizes = DEFAULT_PROBE_SIZES if probe_sizes is None else parse_probe_sizes(probe_sizes)
        report["baselines"] = baselines_vs_checkpoint(Path(ckpt), Path(data), split=split, probe_sizes=sizes,
                                                      device=device, batch=batch, seed=seed)
    if ood is not None:
        from train.evaluate.ood import ood_report

        report["ood"] = ood_report(Path(ckpt), Path(data), Path(ood), split=split, batch=batch, seed=seed,
                                   out=Path(out) if out else None)
    if out and (baselines or ood is not None):
        from train.evaluate.report import write_report

        write_report(report, Path(out))  # again, with the parts added above
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    m = report["metrics"]
    auc = "-" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    click.echo(f"{split}: n {m['n']}  accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  "
               f"recall {m['recall']:.4f}  f1 {m['f1']:.4f}  roc_auc {auc}")
    click.echo(f"confusion matrix (rows true {report['classes']}): {m['confusion_matrix']}")
    th, d = report["thresholds"], report["decisions"]["at_thresholds"]
    click.echo(f"thresholds genuine_at {th['genuine_at']:.4f} / counterfeit_at {th['counterfeit_at']:.4f}, "
               f"{th['source']}")
    click.echo(f"at these thresholds: coverage {_pct(d['coverage'])} ({d['decided']}/{d['n']} decided), accuracy on "
               f"decided {_pct(d['accuracy_decided'])}, counterfeit recall {_pct(d['counterfeit_recall'])} "
               f"({d['counterfeit_missed']} counterfeit called genuine)")
    e = report["decisions"]["expected"]
    click.echo(f"  95% intervals over {e['n_resamples']} resamples of {split} by {e['by']}: coverage "
               f"{span(e['coverage'])}, error on decided {span(e['error_decided'])}")
    click.echo(f"  recall claim ({split}): {report['decisions']['recall_claim']['text']}")
    for line in describe_fit(th["fit"]):
        click.echo(f"  fit on val: {line}")
    click.echo("risk-coverage (symmetric abstain band around 0.5):")
    click.echo(format_table(report["decisions"]["risk_coverage"]["table"], fitted=d))
    for o in report["overlays"]:
        click.echo(f"{o['file']}  {o['image']}  true {o['true']}  pred {o['pred']}  P(counterfeit) "
                   f"{o['p_counterfeit']:.3f} -> {o['decision']}")
    if baselines:
        from train.evaluate.vs_baselines import format_baselines

        click.echo("\n".join(format_baselines(report["baselines"])))
    if ood is not None:
        from train.evaluate.ood import format_ood

        click.echo(format_ood(report["ood"]))
    if out:
        click.echo(f"report.json, risk_coverage.png/.md and {len(report['overlays'])} overlays -> {out}")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


if __name__ == "__main__":
    main()
