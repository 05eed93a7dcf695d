"""`mgfen-train`: train an MGFEN model on a data folder (thin click layer over train.trainer.train)."""

from __future__ import annotations

import json

import click

from edge_runtime.errors import MgfenError
from train.backbones import BACKBONES
from train.bg_cli import bg_train_options
from train.model import PRESETS

EXAMPLES = """
\b
Examples:
  mgfen-data synth --out data/synth
  mgfen-train --data data/synth --out runs/edge                    # edge preset, ~5 min on 2 CPU cores
  mgfen-train --data data/synth --out runs/nobg --bg-replace 0     # without background replacement
  mgfen-train --data data/synth --out runs/base --no-parts         # global branch only (baseline)
  mgfen-train --data data/synth --out runs/paper --preset paper --device cuda
  mgfen-train --data data/synth --out runs/stab --stability 3      # mean +- std over 3 splits
  torchrun --nproc_per_node 2 -m train.train_cli --data data/synth --out runs/ddp
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Data folder ([split/]class/*.png, manifest.csv).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder for checkpoints, metrics and config.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="edge", show_default=True)
@click.option("--backbone", type=click.Choice(BACKBONES), default=None, help="Override the preset's backbone.")
@click.option("--pretrained", default="auto", show_default=True, help="auto | none | PATH to a weights file.")
@click.option("--epochs", type=int, default=None, help="Default: the preset's (paper 50, edge 8).")
@click.option("--batch", type=int, default=None, help="Default: the preset's (paper 8, edge 16).")
@click.option("--lr", type=float, default=None, help="Initial learning rate of the cosine schedule (default 1e-3).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda (mixed precision on CUDA).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue RUN/last.pt.")
@click.option("--no-fpn", is_flag=True, help="Ablation: single-scale heatmap (no FPN top-down).")
@click.option("--no-parts", is_flag=True, help="Ablation: global branch only (the baseline).")
@click.option("--part-backbone", type=click.Choice(["shared", "separate"]), default=None)
@click.option("--global-weight", type=float, default=None, help="Weight of the global logits in the vote.")
@click.option("--lambda", "part_weight", type=float, default=1.0, show_default=True, help="Weight of the parts loss.")
@click.option("--no-augment", is_flag=True, help="Disable flips/rotations/colour jitter.")
@click.option("--frame-size", type=int, default=None, help="Override the preset's frame side F (px).")
@click.option("--global-size", type=int, default=None, help="Override the global view side S (multiple of 32).")
@click.option("--crop-size", type=int, default=None, help="Override the crop side R (multiple of 32).")
@click.option("--k", "k", type=int, default=None, help="Number of part boxes (preset: 4).")
@click.option("--stability", type=int, default=0, help="Train on N seeded group-aware 7:2:1 splits; mean +- std table.")
@click.option("--threads", type=int, default=2, show_default=True, help="torch CPU threads.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@bg_train_options
def main(data, out, preset, backbone, pretrained, epochs, batch, lr, device, seed, resume, no_fpn, no_parts,
         part_backbone, global_weight, part_weight, no_augment, frame_size, global_size, crop_size, k, stability, threads, workers, as_json, debug,
         bg_replace, backgrounds, blend, fg_prior) -> None:
    """Train MGFEN (global branch + FPN heatmap + full-resolution part crops) and test the best epoch."""
    try:
        from train.trainer import TrainConfig, train

        cfg = TrainConfig(data=data, out=out, preset=preset, backbone=backbone, pretrained=pretrained, epochs=epochs,
                          batch=batch, lr=lr, device=device, seed=seed, resume=resume, fpn=not no_fpn,
                          use_parts=not no_parts, part_backbone=part_backbone, global_weight=global_weight,
                          part_weight=part_weight, augment=not no_augment, frame_size=frame_size,
                          global_size=global_size, crop_size=crop_size, k=k, stability=stability, threads=threads,
                          workers=workers, progress=True, bg_replace=bg_replace, backgrounds=backgrounds, blend=blend,
                          fg_prior=fg_prior)
        summary = train(cfg)
    except MgfenError as exc:
        if debug:
            raise
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif "summary" in summary:
        for key, v in summary["summary"].items():
            if v["mean"] is not None:
                click.echo(f"{key}: {100 * v['mean']:.2f} +- {100 * v['std']:.2f}")
    elif summary.get("test"):
        t = summary["test"]
        click.echo(f"test accuracy {t['accuracy']:.4f}  f1 {t['f1']:.4f}  auc {t['roc_auc']}  "
                   f"(best epoch {summary['best_epoch']}, {summary['train_seconds']:.0f} s) -> {summary['out']}")


if __name__ == "__main__":
    main()
