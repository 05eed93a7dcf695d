"""Training benchmark: the `edge` preset with and without the part branch on the default synthetic set,
side by side (test accuracy, wall time), plus one training step of the `paper` preset per image. Both runs
use TrainConfig's defaults, as `mgfen-train` does: background replacement (p 0.5) and the foreground prior.

    .venv/bin/python benchmarks/bench_train.py --data runs/synth --epochs 8
(generates the default dataset, mgfen-data synth: 300 frames at 1024 px, bias 0.9, if --data is missing)
Numbers depend on the machine and on what else runs on it: report the load next to them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click
import torch


def _paper_step_seconds_per_image(batch: int, threads: int) -> float:
    from train.model.loss import mgfen_loss
    from train.model.mgfen import build_model, preset

    torch.set_num_threads(threads)
    cfg = preset("paper")
    model = build_model(cfg, pretrained=None).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    p = cfg.preprocess
    image = torch.rand(batch, 3, p.global_size, p.global_size)
    frame = torch.rand(batch, 3, p.frame_size, p.frame_size)
    label = torch.arange(batch) % 2
    t0 = time.perf_counter()
    loss, _ = mgfen_loss(model(image, frame), label)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return (time.perf_counter() - t0) / batch


@click.command()
@click.option("--data", default="runs/synth", show_default=True, type=click.Path())
@click.option("--out", default="runs/bench_train", show_default=True, type=click.Path())
@click.option("--epochs", type=int, default=None, help="Default: the edge preset's.")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--paper-batch", type=int, default=2, show_default=True)
@click.option("--skip-paper", is_flag=True)
def main(data: str, out: str, epochs: int | None, threads: int, paper_batch: int, skip_paper: bool) -> None:
    from train.fit.config import TrainConfig
    from train.fit.trainer import train

    data_dir = Path(data)
    if not (data_dir / "manifest.csv").is_file():
        from train.data.synth import generate_dataset
        from train.data.synth_config import SynthConfig

        generate_dataset(data_dir, SynthConfig(), workers=2)
    rows = {}
    for name, parts in (("edge", True), ("edge --no-parts", False)):
        cfg = TrainConfig(data=str(data_dir), out=str(Path(out) / name.replace(" --", "_")), preset="edge",
                          epochs=epochs, use_parts=parts, threads=threads)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        summary = train(cfg)
        rows[name] = {"wall_s": time.perf_counter() - t0, "train_s": summary["train_seconds"],
                      "test_acc": summary["test"]["accuracy"], "test_f1": summary["test"]["f1"],
                      "test_auc": summary["test"]["roc_auc"], "best_epoch": summary["best_epoch"],
                      "load_avg_start": load0, "load_avg_end": os.getloadavg()[0]}
    print(f"{'run':18s} {'wall s':>8s} {'train s':>8s} {'test acc':>9s} {'f1':>6s} {'auc':>6s} {'load':>10s}")
    for name, r in rows.items():
        auc = "-" if r["test_auc"] is None else f"{r['test_auc']:.3f}"
        print(f"{name:18s} {r['wall_s']:8.1f} {r['train_s']:8.1f} {r['test_acc']:9.3f} {r['test_f1']:6.3f} {auc:>6s} "
              f"{r['load_avg_start']:4.1f}->{r['load_avg_end']:4.1f}")
    a, b = rows["edge"], rows["edge --no-parts"]
    print(f"parts branch: test accuracy {b['test_acc']:.3f} -> {a['test_acc']:.3f}, "
          f"train time x{a['train_s'] / max(b['train_s'], 1e-9):.2f}")
    if not skip_paper:
        rows["paper_step_s_per_image"] = _paper_step_seconds_per_image(paper_batch, threads)
        print(f"paper preset: one training step, {rows['paper_step_s_per_image']:.2f} s per image "
              f"(batch {paper_batch}, CPU, {threads} threads)")
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "bench_train.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
