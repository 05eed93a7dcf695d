"""The scanner loop: source -> quality gate -> model -> session -> events to sinks.

    scanner = Scanner(runner, source, sinks, tracker, ScanConfig(), audit=None)
    stats = scanner.run()            # until the source ends, max_frames, or stop()

`step()` handles one frame (the loop is `while step(): pass`). Per-frame problems (a file that does not
decode, a frame of the wrong shape, a backend failure, any exception a source raises, e.g. OSError from a
camera driver) become `error` events, are counted, and the loop goes on; only `max_consecutive_errors`
failures in a row stop it (ScanError), so a broken model or camera does not spin forever. Exceptions other
than MgfenError are reported as "TypeName: message", so a programming error is never silent.
KeyboardInterrupt and SystemExit are not caught: they end the scan (run() still gives the open session
its verdict). `stop()` may be called from a signal handler or another thread: the loop finishes the
frame in hand, gives the open session its verdict, and returns.

A sink that raises is counted (`sink_errors`) and never stops the scan; when a sink starts failing, one
`error` event (where "sink", with the exception type) goes to the other sinks, and one line to stderr.

With a PrefetchSource (edge_runtime/capture/prefetch.py) frames arrive gated and preprocessed: the loop then
only runs the graphs, and timings_ms.total is the loop's time per frame, which no longer includes the
preprocess and gate stages (they ran beside the previous frame's graphs and are reported as measured).

A sink is any object with `emit(event: dict)` and `close()`. A sink may also have
`preview(frame_bgr, heatmap, event)`: it is then called after each frame event with the HxWx3 uint8 BGR
source frame, the [h,w] float32 heatmap and the event (references, not copies: a sink must not modify
them, and should rate-limit and encode in its own thread if that is slow).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from edge_runtime import events
from edge_runtime.errors import ImageError, MgfenError
from edge_runtime.model_runner import ModelRunner
from edge_runtime.novelty import UNKNOWN
from edge_runtime.preprocess import to_bgr8
from edge_runtime.quality import QualityConfig, check_frame
from edge_runtime.session import SessionTracker, Verdict
from edge_runtime.sinks.audit_log import AuditLog

log = logging.getLogger(__name__)


class ScanError(MgfenError):
    """The scan cannot go on (too many consecutive errors)."""


def describe(exc: BaseException) -> str:
    """One line for an error event: a typed MgfenError's own message (it names the file or stage),
    otherwise "TypeName: message"."""
    text = str(exc).strip() if isinstance(exc, MgfenError) else f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass(frozen=True)
class ScanConfig:
    """max_frames: stop after this many frames taken from the source (None: until it ends).
    read_timeout: seconds one read waits for a frame. gate: quality thresholds.
    max_consecutive_errors: errors in a row that end the scan.
    keep: how many recent verdict events and frame timings to keep for summaries (bounded memory)."""

    max_frames: int | None = None
    read_timeout: float = 1.0
    gate: QualityConfig = QualityConfig()
    max_consecutive_errors: int = 50
    keep: int = 100_000


@dataclass
class ScanStats:
    frames: int = 0
    classified: int = 0
    retakes: int = 0
    verdicts: int = 0
    errors: int = 0
    sink_errors: int = 0
    timeouts: int = 0
    errors_by_where: dict = field(default_factory=dict)


class Scanner:
    """Runs the loop. Keeps per-frame work to the gate, the model and event building; everything
    about the bundle (thresholds, sizes) was read once when the runner and tracker were built."""

    def __init__(self, runner: ModelRunner, source, sinks: list, tracker: SessionTracker,
                 cfg: ScanConfig = ScanConfig(), audit: AuditLog | None = None) -> None:
        self.runner, self.source, self.sinks, self.tracker = runner, source, list(sinks), tracker
        self.cfg, self.audit = cfg, audit
        self.model = runner.model_record
        self.stats = ScanStats()
        self.verdicts: deque[dict] = deque(maxlen=cfg.keep)  # recent verdict events, for summaries
        self.frame_timings: deque[dict] = deque(maxlen=cfg.keep)  # timings_ms of classified frames
        self._stop = threading.Event()
        self._consecutive = 0
        self._item: str | None = None
        self._last_frame = -1
        self._failing_sinks: set[tuple[int, str]] = set()  # (id(sink), call) whose last call raised
        self.started = time.time()

    # --- control (thread-safe)
    def stop(self) -> None:
        """Ask the loop to finish after the current frame (safe from signal handlers and threads)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def new_session(self) -> None:
        """Start a new scan session at the next frame (the HTTP API / a key calls this)."""
        self.tracker.new_session("trigger")

    def health(self) -> dict:
        """Counters for a health endpoint."""
        s, src = self.stats, getattr(self.source, "stats", None)
        return {"frames": s.frames, "classified": s.classified, "retakes": s.retakes, "verdicts": s.verdicts,
                "errors": s.errors, "session": self.tracker.session_id, "uptime_s": time.time() - self.started,
                "dropped": getattr(src, "dropped", 0), "reconnects": getattr(src, "reconnects", 0),
                "stalls": getattr(src, "stalls", 0)}

    # --- output
    def _emit(self, event: dict) -> None:
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception as exc:  # a failing sink (disk full, dead socket) must not stop the scan
                self._sink_failed(sink, "", exc, event)
            else:
                self._failing_sinks.discard((id(sink), ""))

    def _preview(self, image, heatmap, event: dict) -> None:
        for sink in self.sinks:
            preview = getattr(sink, "preview", None)
            if preview is None:
                continue
            try:
                preview(image, heatmap, event)
            except Exception as exc:  # same policy as _emit
                self._sink_failed(sink, "preview of ", exc, event)
            else:
                self._failing_sinks.discard((id(sink), "preview of "))

    def _sink_failed(self, sink, what: str, exc: Exception, event: dict) -> None:
        """Count a sink failure; the first of a run of failures also becomes an error event for the other
        sinks (not for the failing one, and failures there are only counted: no cascade, no flood)."""
        self.stats.sink_errors += 1
        log.debug("sink %s failed", type(sink).__name__, exc_info=True)
        if (id(sink), what) in self._failing_sinks:
            return
        self._failing_sinks.add((id(sink), what))
        message = f"{what}sink {type(sink).__name__} failed: {describe(exc)}"
        print(f"mgfen-scan: {message}", file=sys.stderr)
        self.stats.errors += 1
        self.stats.errors_by_where["sink"] = self.stats.errors_by_where.get("sink", 0) + 1
        frame = event.get("frame", self._last_frame)
        error = events.error_event(self.tracker.session_id, frame if isinstance(frame, int) else self._last_frame,
                                   self.model, message, "sink")
        for other in self.sinks:
            if other is sink:
                continue
            try:
                other.emit(error)
            except Exception:  # reported when that sink's own failure is
                self.stats.sink_errors += 1

    def _error(self, message: str, where: str, frame: int) -> None:
        self.stats.errors += 1
        self.stats.errors_by_where[where] = self.stats.errors_by_where.get(where, 0) + 1
        self._emit(events.error_event(self.tracker.session_id, frame, self.model, message, where))

    def _verdict(self, v: Verdict) -> None:
        event = events.verdict_event(v.session, v.frame, self.model, v.verdict, v.probability, v.frames_used,
                                     v.reason, v.item)
        if self.audit is not None:
            try:
                event["evidence"] = self.audit.record(event, v.evidence)
            except Exception as exc:  # the verdict still goes out; the missing record is an error event
                self._error(describe(exc), "audit", v.frame)
        self.stats.verdicts += 1
        self.verdicts.append(event)
        self._emit(event)

    def _failed(self, message: str, where: str, frame: int) -> None:
        self._error(message, where, frame)
        self._consecutive += 1
        if self._consecutive >= self.cfg.max_consecutive_errors:
            raise ScanError(f"{self._consecutive} errors in a row, last: {message}")

    # --- the loop
    def step(self) -> bool:
        """Process one frame. Returns False when the scan should end (source ended, max_frames, stop)."""
        if self._stop.is_set():
            return False
        if self.cfg.max_frames is not None and self.stats.frames >= self.cfg.max_frames:
            return False
        t0 = time.perf_counter()
        try:
            frame = self.source.read(self.cfg.read_timeout)
        except MgfenError as exc:  # a file that does not decode: a frame taken and lost; go on with the next
            self.stats.frames += 1
            self._failed(str(exc), "source", self._last_frame + 1)
            self._last_frame += 1
            return True
        except Exception as exc:  # a camera driver's OSError, RuntimeError...: no frame; try again
            log.debug("source read failed", exc_info=True)
            self._failed(describe(exc), "source", self._last_frame + 1)
            return True
        try:
            messages = self.source.errors()
        except Exception as exc:
            messages = [f"source errors() failed: {describe(exc)}"]
        for message in messages:
            self._error(message, "source", self._last_frame)
        if frame is None:
            if self.source.ended:
                return False
            self.stats.timeouts += 1
            return True
        self.stats.frames += 1
        self._last_frame = frame.index
        t1 = time.perf_counter()
        try:
            frame.image = to_bgr8(frame.image, frame.item or f"frame {frame.index}")
        except ImageError as exc:  # wrong type/shape from the source: not a retake, an error
            self._failed(str(exc), "source", frame.index)
            return True
        try:
            self._process(frame, t0, t1)
        except MgfenError as exc:
            self._failed(str(exc), "model", frame.index)
        except Exception as exc:  # an unexpected failure (a bug?) on one frame: surfaced as an event, counted
            log.debug("frame %d failed", frame.index, exc_info=True)
            self._failed(describe(exc), "scanner", frame.index)
        return True

    def _process(self, frame, t0: float, t1: float) -> None:
        image = frame.image
        item_changed = frame.item is not None and frame.item != self._item
        self._item = frame.item if frame.item is not None else self._item
        quality = frame.quality if frame.quality is not None else check_frame(image, self.cfg.gate)
        t2 = time.perf_counter()
        for v in self.tracker.boundary(frame.ts, quality.hist, frame.item, item_changed):
            self._verdict(v)
        session = self.tracker.session_id
        if not quality.ok:
            self.stats.retakes += 1
            self._consecutive = 0
            self._emit(events.retake_event(session, frame.index, self.model, quality.reason, quality, frame.item,
                                           ts=frame.ts))
            return
        # prepared ahead by a PrefetchSource (its preprocess ran beside the previous frame's graphs)
        if frame.prepared is not None:
            result = self.runner.run_prepared(frame.prepared)
        else:
            result = self.runner.run_frame(image)
        timings = dict(result.timings_ms)
        timings["capture"] = (t1 - t0) * 1e3
        timings["gate"] = frame.gate_ms if frame.gate_ms is not None else (t2 - t1) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        event = events.frame_event(session, frame.index, self.model, result, quality, timings, frame.item,
                                   ts=frame.ts)
        self.stats.classified += 1
        self._consecutive = 0
        self.frame_timings.append(event["timings_ms"])
        self._emit(event)
        self._preview(image, result.heatmap, event)
        verdict = self.tracker.add(result.probability, frame.ts, frame.index, quality.hist, image,
                                   unknown=result.decision == UNKNOWN)
        if verdict is not None:
            self._verdict(verdict)

    def run(self) -> ScanStats:
        """Loop until the source ends, max_frames, or stop(); then give the open session its verdict."""
        try:
            while self.step():
                pass
        finally:
            v = self.tracker.flush("stopped" if self._stop.is_set() else "end of stream")
            if v is not None:
                self._verdict(v)
        return self.stats

    def close(self) -> None:
        """Close sinks (each once, errors reported, not raised)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing must reach every sink
                print(f"mgfen-scan: closing {type(sink).__name__} failed: {exc}", file=sys.stderr)
