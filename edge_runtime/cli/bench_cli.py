"""`mgfen-bench`: latency per stage of the scanner pipeline on this machine, one row per backend and
precision. A thin click layer over edge_runtime.bench."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_runtime.bench import BenchConfig, format_table, run_bench
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.capture.prefetch import prefetch_threads
from edge_runtime.cli.cli_errors import OutputPath, error_boundary, write_text
from edge_runtime.cost.devices import DEVICE_CHOICES, ESTIMATE_LABEL, resolve_devices
from edge_runtime.inference.backends import PRECISIONS
from edge_runtime.inference.device_info import describe_device
from edge_runtime.labels import load_labels

BACKEND_CHOICES = ("auto", "ort", "trt", "all")
PRECISION_CHOICES = ("auto",) + tuple(PRECISIONS) + ("all",)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path), help="Bundle folder.")
@click.option("--trust", type=click.Path(path_type=Path), default=None,
              help="Public key (PEM, from mgfen-keygen): refuse a bundle not signed by it or altered since.")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True,
              help="all: onnxruntime and native TensorRT, each in its own row.")
@click.option("--precision", type=click.Choice(PRECISION_CHOICES), default="auto", show_default=True,
              help="auto: the best the bundle has for the backend (int8 when present and its export gate "
                   "passed); all: one row each.")
@click.option("--frames", type=click.IntRange(min=1), default=100, show_default=True, help="Timed frames per row.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed frames first.")
@click.option("--source", default=None,
              help="Frame source URI (file://, csi://, v4l2://, picam://) [default: a fixed synthetic frame].")
@click.option("--labels", "labels_dir", type=click.Path(path_type=Path), default=None,
              help="Class-labelled folder (or manifest.csv) for the file source: adds per-frame accuracy.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime intra-op threads [default: all cores; with --prefetch all but one].")
@click.option("--prefetch/--no-prefetch", default=False, show_default=True,
              help="Capture, gate and preprocess the next frame in a worker thread while the graphs run "
                   "(mgfen-scan's default); total is then the loop's time per frame.")
@click.option("--estimate", "estimate", type=click.Choice(DEVICE_CHOICES), default=None,
              help=f"Print the estimated cost per frame on this Jetson ({ESTIMATE_LABEL}): MACs and activations "
                   "per graph, ms and frames/s (graphs + preprocessing), from the bundle's ONNX files; runs no "
                   "benchmark. Source and assumptions: edge_runtime/cost/devices.py.")
@click.option("--json", "json_path", type=OutputPath(allow_dash=True), default=None,
              help="Also write device, config and rows as JSON ('-' for stdout).")
@error_boundary
def main(bundle_dir: Path, trust: Path | None, backend: str, precision: str, frames: int, warmup: int,
         source: str | None, labels_dir: Path | None, threads: int | None, prefetch: bool, estimate: str | None,
         json_path: Path | None) -> None:
    """Measure latency per stage (capture, gate, preprocess, global, crop, parts, vote, total):
    min/p50/p90/p99/mean ms, FPS, peak memory, model size, and accuracy with --labels.

    \b
    Examples:
      mgfen-bench --bundle runs/demo/bundle
      mgfen-bench --bundle B --backend all --precision all --frames 300 --json bench.json
      mgfen-bench --bundle B --source file://data/test --labels data/test
      mgfen-bench --bundle B --source csi://0 --backend trt --precision int8   # on the Jetson
      mgfen-bench --bundle B --estimate orin-nano        # or all: estimated, runs nothing
    """
    if labels_dir is not None and source is None:
        raise click.UsageError("--labels needs --source file://PATH")
    bundle = load_bundle(bundle_dir, trust=trust)
    if estimate is not None:
        _print_estimate(bundle, bundle_dir, estimate, json_path)
        return
    labels = load_labels(labels_dir, bundle.manifest.classes) if labels_dir is not None else None
    backends = ["ort", "trt"] if backend == "all" else [backend]
    precisions = list(PRECISIONS) if precision == "all" else [precision]
    threads = threads or prefetch_threads(prefetch)
    cfg = BenchConfig(frames=frames, warmup=warmup, threads=threads, source=source, prefetch=prefetch)
    device = describe_device(threads)
    for warning in device["warnings"]:
        click.echo(f"warning: {warning}", err=True)
    rows = run_bench(bundle, backends, [None if p == "auto" else p for p in precisions], cfg, labels,
                     progress=lambda what: click.echo(f"benchmarking {what.replace('None', 'auto')} ...", err=True))
    for row, p in zip(rows, [p for _ in backends for p in precisions]):
        row.precision = p
    for note in dict.fromkeys(n for r in rows for n in r.notes):  # the INT8 gate, once each
        click.echo(f"warning: {note}", err=True)
    click.echo(f"device: {device['cpu']} ({device['cpu_count']} cpus), onnxruntime {device['onnxruntime']}, "
               f"TensorRT {device['tensorrt'] or 'absent'}"
               + (f", GPU {device['gpus'][0]['name']}" if device["gpus"] else "")
               + (f", {device['jetson']['model']}" if device["jetson"] else ""))
    click.echo(f"bundle: {bundle_dir} (model {bundle.model_id[:12]})")
    click.echo(format_table(rows))
    if json_path is not None:
        doc = {"device": device, "bundle": str(bundle_dir), "model_id": bundle.model_id,
               "config": {"frames": frames, "warmup": warmup, "source": source, "threads": threads,
                          "prefetch": prefetch},
               "rows": [r.to_dict() for r in rows]}
        _write_json(json_path, doc)
    if not any(r.status == "ran" for r in rows):
        raise SystemExit(1)


def _write_json(json_path: Path, doc: dict) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    if str(json_path) == "-":
        click.echo(text, nl=False)
    else:
        write_text(json_path, text)


def _print_estimate(bundle, bundle_dir: Path, device: str, json_path: Path | None) -> None:
    """--estimate: the bundle's cost per frame on the chosen Jetson(s), as text (stdout, or stderr when the
    JSON goes to stdout) and in the JSON."""
    from edge_runtime.cost.estimate import estimate_bundle, format_estimate  # onnx: only when asked

    man = bundle.manifest
    est = estimate_bundle(bundle.root, man.preprocess, man.k, man.use_parts, resolve_devices(device))
    to_stderr = json_path is not None and str(json_path) == "-"
    click.echo(f"bundle: {bundle_dir} (model {bundle.model_id[:12]})", err=to_stderr)
    click.echo(format_estimate(est), err=to_stderr)
    if json_path is not None:
        _write_json(json_path, {"bundle": str(bundle_dir), "model_id": bundle.model_id, "estimate": est})


if __name__ == "__main__":  # python -m edge_runtime.cli.bench_cli
    main()
