"""`mgfen-train`: train an MGFEN model on a data folder (thin click layer over train.fit.trainer.train)."""

from __future__ import annotations

import dataclasses
import json

import click

from edge_runtime.cli.cli_errors import OutputPath, error_boundary
from edge_runtime.preprocess import LUMA_SPACES
from edge_runtime.quality_fit import describe_gate_fit
from train.enhance.blend import BLEND_MODES
from train.fit.config import SELECT_METRICS, TrainConfig
from train.fit.thresholds import describe_fit
from train.model.backbones import BACKBONES
from train.model.mgfen import PRESETS

# Every default of a flag comes from TrainConfig (the library's defaults), the one place they are set.
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

# Options `mgfen-train` adds for online background replacement (applied as a decorator).
# The defaults come from the caller (train.fit.config.TrainConfig), the one place they are set.
def bg_train_options(bg_replace: float, blend: str, fg_prior: float):
    options = [
        click.option("--bg-replace", type=click.FloatRange(0.0, 1.0), default=bg_replace, show_default=True,
                     help="Probability of replacing a training frame's background with one from the library (MGFEN's"
                          " micro-grained feature enhancement; needs DATA/masks, see `mgfen-data masks`; without "
                          "them it is OFF, as the summary says; 0 = off)."),
        click.option("--backgrounds", type=click.Path(file_okay=False), default=None,
                     help="Folder of background photos (recursive). Default: the procedural families."),
        click.option("--blend", type=click.Choice(BLEND_MODES), default=blend, show_default=True,
                     help="How the foreground is pasted on the new background."),
        click.option("--fg-prior", type=click.FloatRange(min=0.0), default=fg_prior, show_default=True,
                     help="Weight of the heatmap foreground prior: part boxes are kept off the background (uses "
                          "DATA/masks; without them it is OFF; 0 = off)."),
    ]

    def apply(func):
        for opt in reversed(options):
            func = opt(func)
        return func

    return apply


EXAMPLES = """
\b
Examples:
  mgfen-data synth --out data/synth
  mgfen-train --data data/synth --out runs/edge                    # edge preset, ~5 min on 2 CPU cores
  mgfen-train --data data/synth --out runs/nobg --bg-replace 0     # without background replacement
  mgfen-train --data data/synth --out runs/base --no-parts         # global branch only (baseline)
  mgfen-train --data data/synth --out runs/paper --preset paper --device cuda
  mgfen-train --data data/synth --out runs/stab --stability 3      # mean +- std over 3 splits
  torchrun --nproc_per_node 2 -m train.cli.mgfen_train --data data/synth --out runs/ddp
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", required=True, type=click.Path(file_okay=False),
              help="Data folder ([split/]class/*.png, manifest.csv).")
@click.option("--out", required=True, type=OutputPath(folder=True),
              help="Run folder for checkpoints, metrics and config.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=DEFAULTS["preset"], show_default=True)
@click.option("--backbone", type=click.Choice(BACKBONES), default=None, help="Override the preset's backbone.")
@click.option("--pretrained", default=DEFAULTS["pretrained"], show_default=True,
              help="auto | none | PATH to a weights file.")
@click.option("--epochs", type=int, default=None, help="Default: the preset's (paper 50, edge 8).")
@click.option("--batch", type=int, default=None, help="Default: the preset's (paper 8, edge 16).")
@click.option("--lr", type=float, default=None, help="Initial learning rate of the cosine schedule (default 1e-3).")
@click.option("--device", default=DEFAULTS["device"], show_default=True, help="cpu | cuda (mixed precision on CUDA).")
@click.option("--seed", type=int, default=DEFAULTS["seed"], show_default=True)
@click.option("--resume", is_flag=True, help="Continue RUN/last.pt.")
@click.option("--no-fpn", is_flag=True, help="Ablation: single-scale heatmap (no FPN top-down).")
@click.option("--no-parts", is_flag=True, help="Ablation: global branch only (the baseline).")
@click.option("--part-backbone", type=click.Choice(["shared", "separate"]), default=None)
@click.option("--global-weight", type=float, default=None, help="Weight of the global logits in the vote.")
@click.option("--lambda", "part_weight", type=float, default=DEFAULTS["part_weight"], show_default=True,
              help="Weight of the parts loss.")
@click.option("--no-augment", is_flag=True, help="Disable flips/rotations/colour jitter.")
@click.option("--frame-size", type=int, default=None,
              help="Frame side F (px); default: the preset's, fitted to smaller photos (--fit-frame).")
@click.option("--fit-frame/--preset-frame", default=DEFAULTS["fit_frame"], show_default=True,
              help="Without --frame-size: shrink the preset's frame to the train photos' median square side when it "
                   "is smaller, so part crops are the photo's own pixels, never magnified (train/data/frame_fit.py).")
@click.option("--global-size", type=int, default=None, help="Override the global view side S (multiple of 32).")
@click.option("--crop-size", type=int, default=None, help="Override the crop side R (multiple of 32).")
@click.option("--luma-space", type=click.Choice(sorted(LUMA_SPACES)), default=None,
              help="Luminance that contrast enhancement and the brightness gain work on: L of LAB (the presets') "
                   "or Y of YCrCb (about 2x cheaper preprocessing, lower AUC on the real development sets).")
@click.option("--k", "k", type=int, default=None, help="Number of part boxes (preset: 4).")
@click.option("--backbone-lr-scale", type=float, default=None,
              help="Backbone learning rate = lr * this (default: the preset's).")
@click.option("--head-epochs", type=int, default=None,
              help="First N epochs train the heads only on frozen features (default: the preset's).")
@click.option("--freeze-bn/--train-bn", default=None,
              help="Keep backbone BatchNorm statistics at their pretrained values (default: the preset's).")
@click.option("--select", type=click.Choice(SELECT_METRICS), default=None,
              help="Best epoch by val accuracy or AUC (default: the preset's).")
@click.option("--stability", type=click.IntRange(min=0), default=DEFAULTS["stability"],
              help="Train on N seeded group-aware 7:2:1 splits; mean +- std table.")
@click.option("--threads", type=click.IntRange(min=1), default=DEFAULTS["threads"], show_default=True,
              help="torch CPU threads.")
@click.option("--workers", type=click.IntRange(min=0), default=DEFAULTS["workers"], show_default=True,
              help="DataLoader worker processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--target-recall", type=float, default=DEFAULTS["target_recall"], show_default=True,
              help="Counterfeit recall on val that the fitted genuine_at threshold keeps (train.fit.thresholds).")
@click.option("--target-precision", type=float, default=DEFAULTS["target_precision"], show_default=True,
              help="Val precision of counterfeit calls that fits counterfeit_at; between the two: uncertain.")
@click.option("--novelty-rate", type=float, default=DEFAULTS["novelty_rate"], show_default=True,
              help="Target false-refusal rate of the `unknown` threshold: the fraction of in-domain val images (0.02 "
                   "= 2%) whose novelty score it refuses (edge_runtime/novelty.py).")
@bg_train_options(bg_replace=DEFAULTS["bg_replace"], blend=DEFAULTS["blend"], fg_prior=DEFAULTS["fg_prior"])
@error_boundary
def main(data, out, preset, backbone, pretrained, epochs, batch, lr, device, seed, resume, no_fpn, no_parts,
         part_backbone, global_weight, part_weight, no_augment, frame_size, fit_frame, global_size, crop_size,
         luma_space, k, backbone_lr_scale, head_epochs, freeze_bn, select, stability, threads, workers, as_json,
         target_recall, target_precision, novelty_rate, bg_replace, backgrounds, blend, fg_prior) -> None:
    """Train MGFEN (global branch + FPN heatmap + full-resolution part crops) and test the best epoch."""
    from train.fit.trainer import train

    cfg = TrainConfig(data=data, out=str(out), preset=preset, backbone=backbone, pretrained=pretrained, epochs=epochs,
                      batch=batch, lr=lr, device=device, seed=seed, resume=resume, fpn=not no_fpn,
                      use_parts=not no_parts, part_backbone=part_backbone, global_weight=global_weight,
                      part_weight=part_weight, augment=not no_augment, frame_size=frame_size, fit_frame=fit_frame,
                      global_size=global_size, crop_size=crop_size, luma_space=luma_space, k=k,
                      backbone_lr_scale=backbone_lr_scale, head_epochs=head_epochs, freeze_bn=freeze_bn, select=select,
                      stability=stability, threads=threads,
                      workers=workers, progress=True, bg_replace=bg_replace, backgrounds=backgrounds, blend=blend,
                      fg_prior=fg_prior, target_recall=target_recall, target_precision=target_precision,
                      novelty_rate=novelty_rate)
    summary = train(cfg)
    if summary.get("split_note") and not as_json:
        click.echo(summary["split_note"])
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif "summary" in summary:
        lines = [f"{key}: {100 * v['mean']:.2f} +- {100 * v['std']:.2f}" for key, v in summary["summary"].items()
                 if v["mean"] is not None] or [f"no test metrics -> {summary['out']}"]
        lines[0] += _off_note(summary) + _frame_note(summary)  # said once, on the first line
        click.echo("\n".join(lines))
    elif summary.get("test"):
        t = summary["test"]
        click.echo(f"test accuracy {t['accuracy']:.4f}  f1 {t['f1']:.4f}  auc {t['roc_auc']}  "
                   f"(best epoch {summary['best_epoch']}, {summary['train_seconds']:.0f} s) -> {summary['out']}"
                   f"{_off_note(summary)}{_frame_note(summary)}")
        click.echo(_thresholds_line(summary["thresholds"], t.get("decisions")))
        if summary.get("quality"):
            click.echo(describe_gate_fit(summary["quality"]))
    else:
        click.echo(f"trained (no test split) -> {summary['out']}{_off_note(summary)}{_frame_note(summary)}")


def _frame_note(summary: dict) -> str:
    """' | frame fitted: ...' when the frame was shrunk to the photos (train.data.frame_fit)."""
    fr = summary.get("frame") or {}
    if not fr.get("fitted"):
        return ""
    return (f"  | frame fitted: {fr['size']} px (photos' median square {fr['median_square_side']:.0f} px; "
            f"preset {fr['preset']}, --preset-frame keeps it)")


def _off_note(summary: dict) -> str:
    """' | OFF: ...' when background replacement or the foreground prior were asked for but could not run."""
    bg = summary.get("background") or {}
    return f"  | OFF: {' and '.join(bg['off'])} ({bg['off_reason']})" if bg.get("off") else ""


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _thresholds_line(fit: dict, test: dict | None) -> str:
    """One line on the fitted decision thresholds and what they do on the test split, then the fit's
    expected coverage and error and its recall claim (train.fit.thresholds.describe_fit)."""
    th = fit["thresholds"]
    line = (f"thresholds genuine_at {th['genuine_at']:.4f} ({fit['genuine_method']}), counterfeit_at "
            f"{th['counterfeit_at']:.4f} ({fit['counterfeit_method']}) from {fit['n_counterfeit']} counterfeit + "
            f"{fit['n_genuine']} genuine val images")
    if test:
        line += (f"; test: coverage {_pct(test['coverage'])}, accuracy on decided {_pct(test['accuracy_decided'])}, "
                 f"counterfeit recall {_pct(test['counterfeit_recall'])}")
    return "\n".join([line, *describe_fit(fit)])


if __name__ == "__main__":
    main()
