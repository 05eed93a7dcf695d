"""One frame ahead: the next frame is read, gated and preprocessed while the graphs run on this one.

    src = PrefetchSource(open_source(uri), prepare=runner.prepare, gate=QualityConfig())
    src.start()
    frame = src.read(timeout)      # a sources.Frame with .quality, .gate_ms and .prepared filled in

Preprocessing (centre crop, resize, CLAHE: ~10 ms for the edge preset on a 2-core CPU) is as long as the
two INT8 graphs together. OpenCV and onnxruntime both release the GIL, so a worker thread that prepares
frame n+1 while the caller runs the graphs on frame n hides most of it. The price is one frame of
latency: a frame waits, prepared, until the caller takes it.

The wrapper keeps the source's contract: read() returns the next Frame, None on a timeout or at the end
(then `ended` is True), and raises what the source raised, in order. A frame whose gate or preparation
fails is handed over without `prepared`, so the caller redoes that step and meets the same error where it
would have met it without prefetching.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Callable

import numpy as np

from edge_runtime.capture.sources import Frame
from edge_runtime.preprocess import to_bgr8
from edge_runtime.quality import QualityConfig, check_frame

_FRAME, _NONE, _END, _RAISE = range(4)


def prefetch_threads(prefetch: bool) -> int | None:
    """onnxruntime intra-op threads when none were asked for: with prefetch, all cores but the one the
    worker prepares the next frame on; without, None (onnxruntime's default: all cores)."""
    return max(1, (os.cpu_count() or 2) - 1) if prefetch else None


class PrefetchSource:
    """Wraps a source (anything with start/read(timeout)/errors/ended/stats/close) with a worker thread
    that stays one frame ahead. `prepare`: HxWx3 uint8 BGR -> a prepared frame (ModelRunner.prepare);
    `gate`: the quality gate run before it (a frame that fails the gate is not prepared)."""

    def __init__(self, source, prepare: Callable[[np.ndarray], object], gate: QualityConfig,
                 read_timeout: float = 0.5) -> None:
        self.source = source
        self.name = getattr(source, "name", "source")
        self._prepare = prepare
        self._gate = gate
        self._read_timeout = read_timeout
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ended = False

    @property
    def stats(self):
        return self.source.stats

    def errors(self) -> list[str]:
        return self.source.errors()

    def start(self) -> None:
        self.source.start()
        self._thread = threading.Thread(target=self._work, daemon=True, name=f"prefetch {self.name}")
        self._thread.start()

    def _put(self, item: tuple) -> bool:
        """Hand one item over, waiting while the caller has not taken the last; False when stopping."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _ready(self, frame: Frame) -> Frame:
        try:
            t0 = time.perf_counter()
            frame.image = to_bgr8(frame.image, frame.item or f"frame {frame.index}")
            quality = check_frame(frame.image, self._gate)
            frame.gate_ms = (time.perf_counter() - t0) * 1e3
            frame.quality = quality
            if quality.ok:
                frame.prepared = self._prepare(frame.image)
        except Exception:  # the caller redoes the failed step and reports it where it always has
            frame.prepared = None
        return frame

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.source.read(self._read_timeout)
            except Exception as exc:  # delivered to the caller's read(), in order
                if not self._put((_RAISE, exc)):
                    return
                continue
            if frame is None:
                if getattr(self.source, "ended", False):
                    self._put((_END, None))
                    return
                if not self._put((_NONE, None)):
                    return
                continue
            if not self._put((_FRAME, self._ready(frame))):
                return

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next prepared frame; None on a timeout or at the end of the source; raises what the
        source raised."""
        if self.ended:
            return None
        try:
            kind, value = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if kind == _RAISE:
            raise value
        if kind == _END:
            self.ended = True
        return value if kind == _FRAME else None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.source.close()

    def __enter__(self) -> "PrefetchSource":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
