"""`mgfen-scan`: run the scanner on a camera or files, and export the audit log.

A thin click layer: it parses options, builds typed configs and calls edge_runtime functions.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import click

from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.capture.prefetch import PrefetchSource, prefetch_threads
from edge_runtime.capture.sources import CaptureConfig, open_source
from edge_runtime.cli.cli_errors import OutputPath, debug_option, error_boundary, write_text
from edge_runtime.inference.backends import BACKENDS, PRECISIONS
from edge_runtime.labels import load_labels
from edge_runtime.model_runner import ModelRunner
from edge_runtime.quality import QualityConfig
from edge_runtime.quality_fit import describe_gate_fit, gate_for_bundle
from edge_runtime.scan_summary import format_summary, summarise
from edge_runtime.scanner import ScanConfig, Scanner
from edge_runtime.session import SessionConfig, SessionTracker
from edge_runtime.sinks.audit_log import AuditLog, export_csv
from edge_runtime.sinks.sink_factory import make_sinks, sink_options

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
def main() -> None:
    """MGFEN scanner: camera or files -> per-frame results and per-item verdicts as JSON Lines.

    \b
    Examples:
      mgfen-scan run --bundle runs/demo/bundle --source csi://0
      mgfen-scan run --bundle B --source picam://0 --audit audit.db --out events.jsonl
      mgfen-scan run --bundle B --trust keys/team.pub --source csi://0   # signed bundles only
      mgfen-scan run --bundle B --source file://data/test --labels data/test --no-gate
      mgfen-scan audit export --db audit.db --csv verdicts.csv
    """


@main.command("run")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path),
              help="Bundle folder (manifest.json + ONNX files).")
@click.option("--trust", type=click.Path(path_type=Path), default=None,
              help="Public key (PEM, from mgfen-keygen): refuse a bundle not signed by it or altered since.")
@click.option("--source", required=True,
              help="picam://N, csi://N, v4l2:///dev/videoN, file://PATH (image, folder, glob, video), rtsp://...")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="auto: native TensorRT if an engine exists, else onnxruntime with the best provider.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Model precision [default: int8 when the bundle has it for the backend and its export "
                   "gate passed, else fp32].")
@click.option("--session-frames", type=click.IntRange(min=1), default=15, show_default=True,
              help="Most good frames per scan session.")
@click.option("--min-frames", type=click.IntRange(min=1), default=3, show_default=True,
              help="Fewest good frames before a session may stop early.")
@click.option("--loop", is_flag=True, help="Repeat a file source.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pace a file source at FPS frames per second, like a camera (frames may then be dropped).")
@click.option("--out", default=None, help="JSON Lines file for events (appended) [default: stdout].")
@click.option("--audit", "audit_db", type=OutputPath(), default=None,
              help="SQLite audit log of verdicts (evidence JPEGs beside it).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames.")
@click.option("--labels", "labels_dir", type=click.Path(path_type=Path), default=None,
              help="Ground truth: a folder whose class subfolders (or manifest.csv) label the file source's "
                   "images; prints accuracy, confusion matrix and latency per stage at the end.")
@click.option("--summary-json", type=OutputPath(), default=None,
              help="Also write the end-of-run summary as JSON.")
@click.option("--no-gate", is_flag=True, help="Classify every frame (no focus/exposure gate).")
@click.option("--min-focus", type=click.FloatRange(min=0), default=None,
              help="Quality gate: minimum variance of the Laplacian [default: the bundle's gate fitted on its train "
                   f"photos, else {QualityConfig.min_focus:g}].")
@click.option("--frame-timeout", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds without a camera frame before the watchdog reconnects.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime intra-op threads [default: all cores; with --prefetch all but one].")
@click.option("--prefetch/--no-prefetch", default=True, show_default=True,
              help="Gate and preprocess the next frame in a worker thread while the graphs run on this one.")
@sink_options
@error_boundary
def run_command(bundle_dir: Path, trust: Path | None, source: str, backend: str, precision: str | None,
                session_frames: int, min_frames: int, loop: bool, rate: float | None, out: str | None,
                audit_db: Path | None, max_frames: int | None, labels_dir: Path | None,
                summary_json: Path | None, no_gate: bool, min_focus: float | None, frame_timeout: float,
                threads: int | None, prefetch: bool, **sink_opts) -> None:
    """Scan: source -> quality gate -> model -> sessions -> events (one JSON object per line).

    \b
    Events: frame (probability, decision, ROI boxes in source pixels, timings), verdict (genuine /
    counterfeit / uncertain / unknown per item), retake (frame failed the quality gate), error.
    SIGTERM or Ctrl-C finishes the frame in hand, writes the open session's verdict and exits 0.
    """
    if min_frames > session_frames:
        raise click.UsageError("--min-frames cannot exceed --session-frames")
    bundle = load_bundle(bundle_dir, trust=trust)
    labels = load_labels(labels_dir, bundle.manifest.classes) if labels_dir is not None else None
    src = open_source(source, loop=loop, rate=rate, capture=CaptureConfig(frame_timeout=frame_timeout))
    if labels is not None and not source.startswith("file://") and "://" in source:
        raise click.UsageError("--labels needs a file source (file://PATH)")
    runner = ModelRunner.open(bundle, backend, precision, threads or prefetch_threads(prefetch))
    for note in runner.precision_notes:  # the INT8 gate: first, before anything else is printed
        click.echo(f"warning: {note}", err=True)
    if trust is not None:
        for name in runner.backend_names:
            if name.startswith("trt:") or "Tensorrt" in name:
                click.echo(f"warning: --trust covers manifest.json and its ONNX files, not the TensorRT engine "
                           f"cache in {bundle_dir}/engines used by {name}", err=True)
    tracker = SessionTracker(SessionConfig(session_frames=session_frames, min_frames=min_frames),
                             bundle.manifest.thresholds)
    gate = gate_for_bundle(bundle.manifest.quality, QualityConfig(enabled=not no_gate))
    if min_focus is not None:
        gate = gate.with_thresholds({"min_focus": min_focus})
    notices = list(runner.notices)
    if bundle.manifest.quality and not no_gate:
        notices.append(describe_gate_fit(bundle.manifest.quality)
                       + (f"; --min-focus {min_focus:g}" if min_focus is not None else ""))
    cfg = ScanConfig(max_frames=max_frames, gate=gate)
    if prefetch:
        src = PrefetchSource(src, runner.prepare, cfg.gate)
    audit = None
    scanner = None
    try:
        audit = AuditLog(audit_db) if audit_db is not None else None
        scanner = Scanner(runner, src, [], tracker, cfg, audit)
        scanner.sinks = make_sinks(out, scanner, sink_opts)
        src.start()
        for notice in notices:  # once the scan can start (a bad source's error stays alone)
            click.echo(f"mgfen-scan: {notice}", err=True)
        for graph_backend in (runner.global_backend, runner.parts_backend):  # which backend, and why (auto)
            if graph_backend is not None and graph_backend.why:
                click.echo(f"backend: {graph_backend.why}", err=True)
        previous = {s: signal.signal(s, lambda *_: scanner.stop()) for s in (signal.SIGTERM, signal.SIGINT)}
        t0 = time.perf_counter()
        try:
            stats = scanner.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        wall = time.perf_counter() - t0
    finally:
        src.close()
        if scanner is not None:
            scanner.close()
        runner.close()
        if audit is not None:
            audit.close()
    summary = summarise(list(scanner.verdicts), list(scanner.frame_timings), stats, wall, labels,
                        bundle.manifest.classes)
    summary["backends"] = runner.backend_names
    summary["source"] = dict(vars(src.stats))
    if summary_json is not None:
        write_text(summary_json, json.dumps(summary, indent=2) + "\n")
    stream = sys.stdout if out not in (None, "-") else sys.stderr
    click.echo(format_summary(summary), file=stream)


@main.group("audit")
def audit_group() -> None:
    """The verdict audit log."""


@audit_group.command("export")
@click.option("--db", "db_path", required=True, type=click.Path(path_type=Path), help="Audit database.")
@click.option("--csv", "csv_path", required=True, type=OutputPath(), help="CSV file to write.")
@error_boundary
def audit_export(db_path: Path, csv_path: Path) -> None:
    """Write every verdict in the audit log to a CSV file.

    \b
    Example:
      mgfen-scan audit export --db audit.db --csv verdicts.csv
    """
    n = export_csv(db_path, csv_path)
    click.echo(f"wrote {n} verdicts to {csv_path}")


if __name__ == "__main__":  # python -m edge_runtime.cli.scan_cli
    main()
