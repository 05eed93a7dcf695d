"""Latency per stage of the whole scanner pipeline on the machine it runs on (mgfen-bench).

For each backend x precision it opens the bundle's graphs, warms up, then times every stage of
`frames` frames: capture (reading the source), gate (quality.check_frame), the model stages of
ModelRunner (preprocess, global, crop, parts, vote) and total. Every frame runs the model whatever the
gate says, so the numbers are the pipeline's cost, not the gate's pass rate (reported beside).
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.bundle.manifest import Bundle
from edge_runtime.capture.prefetch import PrefetchSource
from edge_runtime.capture.sources import Frame, open_source
from edge_runtime.errors import MgfenError
from edge_runtime.model_runner import STAGES, ModelRunner
from edge_runtime.quality import check_frame
from edge_runtime.quality_fit import gate_for_bundle

BENCH_STAGES = ("capture", "gate") + STAGES + ("total",)


@dataclass(frozen=True)
class BenchConfig:
    """frames: timed frames per row; warmup: untimed frames first; threads: onnxruntime intra-op
    threads (None: onnxruntime's default); source: frame source URI, or None for a fixed synthetic frame;
    prefetch: capture, gate and preprocess the next frame in a worker thread (edge_runtime.capture.prefetch),
    as mgfen-scan does by default; total is then the loop's time per frame."""

    frames: int = 100
    warmup: int = 10
    threads: int | None = None
    source: str | None = None
    prefetch: bool = False

    def __post_init__(self) -> None:
        if self.frames < 1 or self.warmup < 0:
            raise ValueError("bench: frames must be >= 1 and warmup >= 0")


@dataclass
class BenchRow:
    """One backend x precision: status 'ran' or 'failed', stats {stage: {min,p50,p90,p99,mean}} in ms."""

    backend: str
    precision: str
    status: str
    reason: str | None = None
    engines: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    fps: float | None = None
    frames: int = 0
    gate_pass: float | None = None
    accuracy: float | None = None
    labelled: int = 0
    file_mb: float | None = None
    peak_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)  # ModelRunner.precision_notes (the INT8 gate)

    def to_dict(self) -> dict:
        return dict(vars(self))


def stage_stats(samples: list[float]) -> dict:
    """min, p50, p90, p99 and mean (ms) of a list of timings, rounded to microseconds."""
    arr = np.asarray(samples, dtype=np.float64)
    return {"min": round(float(arr.min()), 3), "p50": round(float(np.percentile(arr, 50)), 3),
            "p90": round(float(np.percentile(arr, 90)), 3), "p99": round(float(np.percentile(arr, 99)), 3),
            "mean": round(float(arr.mean()), 3)}


def synthetic_frame(size: int, seed: int = 0) -> np.ndarray:
    """A fixed, textured size x size x 3 uint8 BGR frame (in focus, mid exposure) for source-less runs."""
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 190, size=(size, size, 3), dtype=np.uint8)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


class _FrameFeed:
    """Frames for a run, as a source (start / read / errors / ended / stats / close, what PrefetchSource
    wraps): from a source URI (looped), or copies of the fixed synthetic frame."""

    def __init__(self, source: str | None, frame_size: int) -> None:
        self.name, self.ended, self.stats, self._index = "bench feed", False, None, 0
        self._uri = source
        self._src = None
        self._still = synthetic_frame(frame_size) if source is None else None

    def start(self) -> None:
        if self._uri is not None:
            self._src = open_source(self._uri, loop=True)
            self._src.start()

    def read(self, timeout: float | None = None) -> Frame:
        self._index += 1
        if self._src is None:  # a copy: what a camera hand-off costs at least
            return Frame(self._still.copy(), self._index - 1, time.time(), None)
        frame = self._src.read(timeout=5.0)
        if frame is None:
            raise MgfenError(f"source gave no frame within 5 s: {'; '.join(self._src.errors()[-1:]) or 'stalled'}")
        return frame

    def errors(self) -> list[str]:
        return []

    def close(self) -> None:
        if self._src is not None:
            self._src.close()


def bench_runner(runner: ModelRunner, cfg: BenchConfig, labels: dict[str, str] | None = None,
                 classes: tuple[str, ...] = ()) -> BenchRow:
    """Time `cfg.warmup + cfg.frames` frames through capture, gate and the model. Returns a ran row
    (backend/precision filled by the caller)."""
    gate = gate_for_bundle(runner.bundle.manifest.quality)  # the scanner's gate, so gate_pass is the field's
    source = _FrameFeed(cfg.source, runner.cfg.frame_size)
    if cfg.prefetch:
        source = PrefetchSource(source, runner.prepare, gate)
    source.start()
    times: dict[str, list[float]] = {s: [] for s in BENCH_STAGES}
    passed = correct = labelled = 0
    try:
        t_start = None
        for i in range(cfg.warmup + cfg.frames):
            if i == cfg.warmup:
                t_start = time.perf_counter()
            t0 = time.perf_counter()
            frame = source.read(timeout=10.0)
            if frame is None:
                raise MgfenError("the frame feed gave no frame within 10 s")
            image, item = frame.image, frame.item
            t1 = time.perf_counter()
            if frame.quality is not None:  # gated ahead by the prefetch worker
                ok, gate_ms = frame.quality.ok, frame.gate_ms
            else:
                ok = check_frame(image, gate).ok
                gate_ms = (time.perf_counter() - t1) * 1e3
            # every frame runs the model, also one the gate failed (not prepared ahead then)
            if frame.prepared is not None:
                result = runner.run_prepared(frame.prepared)
            else:
                result = runner.run_frame(image)
            t3 = time.perf_counter()
            if i < cfg.warmup:
                continue
            passed += ok
            times["capture"].append((t1 - t0) * 1e3)
            times["gate"].append(gate_ms)
            for stage in STAGES:
                times[stage].append(result.timings_ms[stage])
            times["total"].append((t3 - t0) * 1e3)
            truth = labels.get(str(Path(item).resolve())) if labels and item else None
            if truth is not None:
                labelled += 1
                correct += result.decision == truth
        wall = time.perf_counter() - t_start
    finally:
        source.close()
    return BenchRow(backend="", precision="", status="ran", engines=runner.backend_names,
                    stats={s: stage_stats(v) for s, v in times.items()}, fps=round(cfg.frames / wall, 2),
                    frames=cfg.frames, gate_pass=round(passed / cfg.frames, 3),
                    accuracy=round(correct / labelled, 4) if labelled else None, labelled=labelled)


def model_file_mb(bundle: Bundle, runner: ModelRunner) -> float | None:
    """Size in MiB of the model files the runner opened (ONNX or engine files), where known."""
    total = 0
    for backend in (runner.global_backend, runner.parts_backend):
        path = getattr(backend, "path", None)
        if backend is not None and path is not None and Path(path).is_file():
            total += Path(path).stat().st_size
    return round(total / 2**20, 2) if total else None


def run_bench(bundle: Bundle, backends: list[str], precisions: list[str], cfg: BenchConfig,
              labels: dict[str, str] | None = None, progress=None) -> list[BenchRow]:
    """One row per backend x precision. A combination that cannot open (no TensorRT, no INT8 file...)
    or fails mid-run becomes a 'failed' row with its one-line reason; the others still run."""
    rows = []
    for backend in backends:
        for precision in precisions:
            if progress is not None:
                progress(f"{backend}/{precision}")
            try:
                with ModelRunner.open(bundle, backend, precision, cfg.threads) as runner:
                    row = bench_runner(runner, cfg, labels, bundle.manifest.classes)
                    row.file_mb = model_file_mb(bundle, runner)
                    row.notes = runner.precision_notes
            except MgfenError as exc:
                row = BenchRow(backend="", precision="", status="failed", reason=str(exc))
            row.backend, row.precision = backend, precision
            row.peak_rss_mb = peak_rss_mb()
            rows.append(row)
    return rows


def format_table(rows: list[BenchRow]) -> str:
    """A fixed-width table: one row per backend/precision, p50 per stage, p90/p99 of total, FPS."""
    head = (f"{'backend':<8} {'prec':<5} {'status':<7} " + " ".join(f"{s[:7]:>7}" for s in BENCH_STAGES)
            + f" {'tot p90':>7} {'tot p99':>7} {'FPS':>7} {'MB':>6} {'RSS MB':>7} {'acc':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.status != "ran":
            lines.append(f"{r.backend:<8} {r.precision:<5} {'failed':<7} {r.reason}")
            continue
        cells = " ".join(f"{r.stats[s]['p50']:>7.2f}" for s in BENCH_STAGES)
        acc = f"{r.accuracy:>6.3f}" if r.accuracy is not None else f"{'-':>6}"
        mb = f"{r.file_mb:>6.1f}" if r.file_mb is not None else f"{'-':>6}"
        lines.append(f"{r.backend:<8} {r.precision:<5} {'ran':<7} {cells} {r.stats['total']['p90']:>7.2f} "
                     f"{r.stats['total']['p99']:>7.2f} {r.fps:>7.1f} {mb} {r.peak_rss_mb:>7.1f} {acc}")
    lines.append("stage columns: p50 in ms; FPS: frames / wall time of the timed frames")
    return "\n".join(lines)
