"""onnxruntime's busy-waiting intra-op threads against the scanner's OpenCV preprocessing, side by side in
one run: a bundle's frame loop (edge_runtime.bench.bench_runner, what mgfen-bench times) with the threads
spinning after each run (onnxruntime's default) and without (the runtime's default, OrtBackend spin=False),
each without and with --prefetch.

On a small CPU the spinning threads hold the cores until their spin times out, so the next frame's
colour conversions and CLAHE (OpenCV spreads them over every core) wait for them. Settings alternate round
by round (order reversed every other round); per setting the median over rounds of frames/s and of the
p50 stage times is reported, with the ratio no-spin / spin.

    python benchmarks/bench_spinning.py                      # the demo's bundle (make demo)
    python benchmarks/bench_spinning.py --bundle B --frames 200 --rounds 5
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import click

from _common import cpu_flags
from edge_runtime.bench import BenchConfig, bench_runner
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.capture.prefetch import prefetch_threads
from edge_runtime.errors import MgfenError
from edge_runtime.model_runner import ModelRunner

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "global", "parts", "total")


def one_row(bundle, precision: str, spin: bool, prefetch: bool, frames: int, warmup: int) -> dict:
    """frames/s and p50 ms of STAGES for one setting, through a freshly opened runner."""
    cfg = BenchConfig(frames=frames, warmup=warmup, threads=prefetch_threads(prefetch), prefetch=prefetch)
    with ModelRunner.open(bundle, "ort", precision, cfg.threads, spin=spin) as runner:
        row = bench_runner(runner, cfg)
    return {"fps": row.fps, **{s: row.stats[s]["p50"] for s in STAGES}}


def markdown(results: dict, command: str, flags: str, bundle: Path, precision: str, rounds: int,
             frames: int) -> str:
    lines = ["# onnxruntime thread spinning vs the scanner's preprocessing", "",
             f"Made by `{command}` ({time.strftime('%Y-%m-%d')}; {flags}); bundle `{bundle}`, {precision}, "
             f"onnxruntime CPU, {frames} frames per row, median of {rounds} rounds (settings alternate). "
             "Stage columns: p50 ms; with prefetch `preprocess` runs in the worker beside the graphs and "
             "`total` is the loop's time per frame.", "",
             "| loop | spinning | frames/s | preprocess ms | global ms | parts ms | total ms |",
             "|---|---|---|---|---|---|---|"]
    for (prefetch, spin), rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        lines.append(f"| {'prefetch' if prefetch else 'sequential'} | {'on' if spin else 'off'} | "
                     f"{med['fps']:.1f} | " + " | ".join(f"{med[s]:.2f}" for s in STAGES) + " |")
    lines += ["", "| loop | frames/s off / on | preprocess ms on / off |", "|---|---|---|"]
    for prefetch in (False, True):
        on, off = results[(prefetch, True)], results[(prefetch, False)]
        fps = statistics.median(r["fps"] for r in off) / statistics.median(r["fps"] for r in on)
        pre = statistics.median(r["preprocess"] for r in on) / statistics.median(r["preprocess"] for r in off)
        lines.append(f"| {'prefetch' if prefetch else 'sequential'} | {fps:.2f}x | {pre:.2f}x |")
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path), default=ROOT / "runs" / "demo" / "bundle",
              show_default=True, help="A bundle folder (make demo writes the default one).")
@click.option("--precision", default="int8", show_default=True, type=click.Choice(["int8", "fp32"]))
@click.option("--frames", default=150, show_default=True, type=click.IntRange(min=1))
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(min=0))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "docs" / "results" / "bench_spinning.md",
              show_default=True)
def main(bundle_dir: Path, precision: str, frames: int, warmup: int, rounds: int, out: Path) -> None:
    """Frame loop with and without onnxruntime's thread spinning (module docstring)."""
    flags = cpu_flags()
    click.echo(f"host: {flags}")
    try:
        bundle = load_bundle(bundle_dir)
    except MgfenError as exc:
        raise click.ClickException(f"{exc} (make demo writes runs/demo/bundle)") from None
    settings = [(prefetch, spin) for prefetch in (False, True) for spin in (True, False)]
    results: dict = {s: [] for s in settings}
    for r in range(rounds):
        for prefetch, spin in settings if r % 2 == 0 else reversed(settings):
            row = one_row(bundle, precision, spin, prefetch, frames, warmup)
            results[(prefetch, spin)].append(row)
            click.echo(f"round {r} {'prefetch' if prefetch else 'sequential'} spin={'on' if spin else 'off'}: "
                       + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
    command = "python benchmarks/bench_spinning.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    text = markdown(results, command, flags, bundle_dir.relative_to(ROOT) if bundle_dir.is_relative_to(ROOT)
                    else bundle_dir, precision, rounds, frames)
    out.write_text(text)
    click.echo(text + f"wrote {out}")


if __name__ == "__main__":
    main()
