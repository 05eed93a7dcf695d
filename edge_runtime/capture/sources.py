"""Frame sources by URI, with a capture thread, a watchdog, reconnects and a latest-frame slot.

The URIs (picam://, csi://, v4l2://, file://, rtsp://, sim://) and the cameras behind them live in
edge_runtime/capture/cameras.py.

Two kinds of source, one interface (`start()`, `read(timeout) -> Frame | None`, `ended`, `errors()`,
`stats`, `close()`):
- LiveSource: a capture thread puts frames into a one-frame slot; the pipeline always takes the newest
  frame and older ones are dropped and counted. A watchdog notices a camera that stops delivering
  (no frame for `frame_timeout` s), abandons the stuck reader and reconnects with exponential backoff;
  read errors and disconnects reconnect the same way. Problems are queued as messages for error events.
- PullSource: files without a rate: each read() decodes the next file or video frame, so nothing is
  dropped (evaluation with --labels sees every image).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge_runtime.capture.cameras import Camera, make_camera_factory, parse_source_uri
from edge_runtime.errors import ImageError, MgfenError, SourceError


# ------------------------------------------------------------------------------------------- sources


@dataclass
class Frame:
    """One captured frame. image: HxWx3 uint8 BGR; index: sequence number from the source (gaps mean
    dropped frames); ts: capture time (unix s); item: file name for file sources, else None.
    quality, gate_ms, prepared: filled ahead of time by edge_runtime.capture.prefetch.PrefetchSource (the gate's
    QualityReport, its time, and the model's PreparedFrame when the gate passed), else None."""

    image: np.ndarray
    index: int
    ts: float
    item: str | None = None
    quality: object | None = None
    gate_ms: float | None = None
    prepared: object | None = None


@dataclass(frozen=True)
class CaptureConfig:
    """frame_timeout: seconds without a frame before the watchdog reconnects. open_timeout: seconds
    the first open may take. backoff_initial / backoff_max: reconnect delays (doubling)."""

    frame_timeout: float = 1.0
    open_timeout: float = 10.0
    backoff_initial: float = 0.25
    backoff_max: float = 8.0


@dataclass
class SourceStats:
    captured: int = 0
    delivered: int = 0
    dropped: int = 0
    reconnects: int = 0
    stalls: int = 0
    errors: int = 0


class _Base:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = SourceStats()
        self._errors: list[str] = []
        self._errors_lock = threading.Lock()
        self.ended = False

    def _error(self, message: str) -> None:
        with self._errors_lock:
            self.stats.errors += 1
            self._errors.append(message)

    def errors(self) -> list[str]:
        """Messages about source problems since the last call (for error events)."""
        with self._errors_lock:
            out, self._errors = self._errors, []
        return out

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PullSource(_Base):
    """Synchronous source for files without a rate: read() returns the next frame, never drops one.
    A file that cannot be decoded raises ImageError from read() (the scanner turns it into an error
    event and goes on)."""

    def __init__(self, factory: Callable[[], Camera], name: str) -> None:
        super().__init__(name)
        self._factory = factory
        self._cam: Camera | None = None
        self._index = 0

    def start(self) -> None:
        cam = self._factory()
        cam.open()
        self._cam = cam

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._cam is None or self.ended:
            return None
        try:
            image = self._cam.read()
        except ImageError:
            self._index += 1
            raise
        if image is None:
            self.ended = True
            return None
        self._index += 1
        self.stats.captured += 1
        self.stats.delivered += 1
        return Frame(image, self._index - 1, time.time(), self._cam.item())

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.close()


class LiveSource(_Base):
    """Threaded capture into a latest-frame slot, with a watchdog and reconnect with backoff.

    start() opens the camera once synchronously (SourceError if it does not open within
    open_timeout), then captures in a daemon thread. read(timeout) returns the newest frame not yet
    returned, or None after `timeout` seconds; older frames still in the slot count as dropped.
    """

    def __init__(self, factory: Callable[[], Camera], name: str, cfg: CaptureConfig = CaptureConfig(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name)
        self._factory, self.cfg, self._clock = factory, cfg, clock
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._index = 0
        self._gen = 0
        self._cam: Camera | None = None
        self._last = 0.0
        self._state = "opening"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- capture side
    def start(self) -> None:
        cam = self._factory()
        result: list = []

        def opener() -> None:
            try:
                cam.open()
                result.append(None)
            except MgfenError as exc:
                result.append(exc)

        t = threading.Thread(target=opener, daemon=True, name=f"open {self.name}")
        t.start()
        t.join(self.cfg.open_timeout)
        if not result:
            _close_quietly(cam)
            raise SourceError(f"{self.name}: did not open within {self.cfg.open_timeout:g} s")
        if isinstance(result[0], MgfenError):
            raise SourceError(str(result[0])) if not isinstance(result[0], SourceError) else result[0]
        self._spawn_reader(cam)
        watchdog = threading.Thread(target=self._watchdog, daemon=True, name=f"watchdog {self.name}")
        watchdog.start()
        self._threads.append(watchdog)

    def _spawn_reader(self, cam: Camera | None) -> None:
        with self._cond:
            self._gen += 1
            gen = self._gen
            self._state, self._last = ("opening" if cam is None else "reading"), self._clock()
        t = threading.Thread(target=self._reader, args=(gen, cam), daemon=True, name=f"capture {self.name}")
        t.start()
        self._threads.append(t)

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self._stop.is_set()

    def _phase(self, gen: int, phase: str) -> None:
        """Record what the current reader is doing ("opening" | "reading" | "backoff") and when."""
        with self._cond:
            if gen == self._gen:
                self._state, self._last = phase, self._clock()

    def _reader(self, gen: int, cam: Camera | None) -> None:
        delay = self.cfg.backoff_initial
        while self._current(gen):
            if cam is None:
                self._phase(gen, "opening")
                cam = self._factory()
                try:
                    cam.open()
                except MgfenError as exc:
                    self._error(f"{self.name}: reconnect failed ({exc}); retrying in {delay:g} s")
                    cam = None
                    self._phase(gen, "backoff")
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.cfg.backoff_max)
                    continue
                if not self._current(gen):
                    _close_quietly(cam)
                    return
                self.stats.reconnects += 1
            self._cam = cam
            self._phase(gen, "reading")
            try:
                while self._current(gen):
                    try:
                        image = cam.read()
                    except ImageError as exc:  # one bad file in a paced file source
                        self._error(str(exc))
                        continue
                    if not self._current(gen):
                        break  # abandoned by the watchdog while blocked: drop the frame
                    if image is None:
                        if cam.finite:
                            with self._cond:
                                self.ended = True
                                self._cond.notify_all()
                            return
                        raise SourceError(f"{self.name}: no frame returned")
                    self._put(image, cam.item(), gen)
                    delay = self.cfg.backoff_initial
            except SourceError as exc:
                if self._current(gen):
                    self._error(f"{exc}; reconnecting in {delay:g} s")
            finally:
                if self._cam is cam:
                    self._cam = None
                _close_quietly(cam)
            cam = None
            self._phase(gen, "backoff")
            self._stop.wait(delay)
            delay = min(delay * 2, self.cfg.backoff_max)

    def _put(self, image: np.ndarray, item: str | None, gen: int) -> None:
        with self._cond:
            if self._slot is not None:
                self.stats.dropped += 1
            self._slot = Frame(image, self._index, time.time(), item)
            self._index += 1
            self.stats.captured += 1
            if gen == self._gen:
                self._last = self._clock()
            self._cond.notify_all()

    def _watchdog(self) -> None:
        """Abandon a reader that is stuck: no frame for frame_timeout while reading, or an open() that
        takes longer than open_timeout. Backoff waits are not stalls."""
        period = max(self.cfg.frame_timeout / 4, 0.01)
        while not self._stop.wait(period):
            if self.ended:
                return
            with self._cond:
                limit = {"reading": self.cfg.frame_timeout, "opening": self.cfg.open_timeout}.get(self._state)
                stalled = limit is not None and self._clock() - self._last > limit
                state = self._state
            if not stalled:
                continue
            self.stats.stalls += 1
            what = "no frame" if state == "reading" else "open did not finish"
            self._error(f"{self.name}: {what} for {limit:g} s (camera stalled); reconnecting")
            stuck, self._cam = self._cam, None
            if stuck is not None:
                # close() may itself hang on a dead driver: never block the watchdog on it
                threading.Thread(target=_close_quietly, args=(stuck,), daemon=True).start()
            self._spawn_reader(None)

    # --- consumer side
    def read(self, timeout: float | None = 1.0) -> Frame | None:
        with self._cond:
            if self._slot is None and not self.ended:
                self._cond.wait_for(lambda: self._slot is not None or self.ended or self._stop.is_set(),
                                    timeout)
            frame, self._slot = self._slot, None
        if frame is not None:
            self.stats.delivered += 1
        return frame

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._gen += 1
            self._cond.notify_all()
        cam, self._cam = self._cam, None
        if cam is not None:
            _close_quietly(cam)
        for t in self._threads:
            t.join(timeout=0.5)


def _close_quietly(cam: Camera) -> None:
    try:
        cam.close()
    except Exception:  # closing a dead device must never take down the capture/watchdog threads
        pass


def open_source(uri: str, *, loop: bool = False, rate: float | None = None,
                capture: CaptureConfig = CaptureConfig()) -> PullSource | LiveSource:
    """Parse `uri` and make its source (not started: call start() or use `with`).

    loop/rate override the URI's file options. Files without a rate give a PullSource; everything
    else a LiveSource. Raises SourceError for a URI that does not parse or names nothing.
    """
    spec = parse_source_uri(uri)
    if spec.scheme == "file":
        rate = rate if rate is not None else spec.number("rate", None)
        if rate is not None and rate <= 0:
            raise SourceError(f"{uri}: rate must be > 0 frames per second")
        factory = make_camera_factory(spec, loop=loop)
        if rate is None:
            return PullSource(factory, spec.uri)
        return LiveSource(lambda: _Paced(factory(), rate), spec.uri, capture)
    if rate is not None:
        raise SourceError(f"{uri}: --rate applies to file:// sources only")
    return LiveSource(make_camera_factory(spec, loop=loop), spec.uri, capture)


class _Paced(Camera):
    """Wraps a file camera so it delivers at `rate` frames per second, like a camera would."""

    def __init__(self, inner: Camera, rate: float) -> None:
        self.inner, self.period, self.finite, self.name = inner, 1.0 / rate, inner.finite, inner.name
        self._next = 0.0

    def open(self) -> None:
        self.inner.open()
        self._next = time.monotonic()

    def read(self) -> np.ndarray | None:
        wait = self._next - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._next = max(self._next + self.period, time.monotonic() - self.period)
        return self.inner.read()

    def close(self) -> None:
        self.inner.close()

    def item(self) -> str | None:
        return self.inner.item()
