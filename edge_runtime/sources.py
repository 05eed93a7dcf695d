"""Frame sources by URI, with a capture thread, a watchdog, reconnects and a latest-frame slot.

URIs (options as a query string, e.g. `file:///data/test?loop=1&rate=10`):
    picam://N              Raspberry Pi camera N via picamera2 (lazy import); macro focus with
                           AfMode Manual + LensPosition (?lens=DIOPTRES, default 10), ?size=WxH
    csi://N                Jetson CSI sensor N via OpenCV + GStreamer nvarguscamerasrc; ?size=WxH&fps=N
    v4l2:///dev/videoN     USB camera / microscope via cv2.CAP_V4L2; ?size=WxH&fps=N
    file://PATH            an image, a folder of images (sorted, recursive), a glob, or a video file;
                           ?loop=1 repeats, ?rate=FPS paces like a camera (otherwise every frame is
                           delivered, none dropped)
    rtsp://...             network stream via OpenCV (FFmpeg)
    sim://?...             a simulated camera for tests and demos (see SimulatedCamera)
A bare path is taken as file://PATH.

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

import glob as globlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from edge_runtime.errors import ImageError, MgfenError, SourceError
from edge_runtime.preprocess import IMAGE_SUFFIXES, list_images, read_image

SCHEMES = ("picam", "csi", "v4l2", "file", "rtsp", "sim")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".mjpeg", ".mjpg")
OPTIONS = {
    "picam": {"size", "lens"},
    "csi": {"size", "fps"},
    "v4l2": {"size", "fps"},
    "file": {"loop", "rate"},
    "rtsp": set(),
    "sim": {"size", "fps", "stall_after", "disconnect_after", "fail_opens", "frames", "colour"},
}


# ---------------------------------------------------------------------------------------------- URIs


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source URI: scheme, target (camera index, device path, file path or URL), options."""

    uri: str
    scheme: str
    target: str
    options: dict = field(default_factory=dict)

    def size(self) -> tuple[int, int] | None:
        value = self.options.get("size")
        if value is None:
            return None
        try:
            w, h = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise SourceError(f"{self.uri}: size must be WxH, e.g. 1920x1080") from None
        if w < 1 or h < 1:
            raise SourceError(f"{self.uri}: size must be positive")
        return w, h

    def number(self, key: str, default: float | None) -> float | None:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            out = float(value)
        except ValueError:
            raise SourceError(f"{self.uri}: option {key} must be a number, got {value!r}") from None
        if out < 0:
            raise SourceError(f"{self.uri}: option {key} must be >= 0")
        return out

    def flag(self, key: str) -> bool:
        value = str(self.options.get(key, "0")).lower()
        if value not in ("0", "1", "true", "false", "yes", "no", ""):
            raise SourceError(f"{self.uri}: option {key} must be 0/1/true/false")
        return value in ("1", "true", "yes", "")


def parse_source_uri(uri: str) -> SourceSpec:
    """Parse and check a source URI (see the module docstring). Raises SourceError with the reason."""
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError("empty source URI")
    uri = uri.strip()
    if "://" not in uri:
        return SourceSpec(uri, "file", uri, {})
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise SourceError(f"{uri}: unknown source scheme {scheme!r}; use one of "
                          f"{', '.join(s + '://' for s in SCHEMES)}")
    try:
        options = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
    except ValueError:
        raise SourceError(f"{uri}: cannot parse the options {parts.query!r} (use ?key=value&key=value)") from None
    if scheme == "rtsp":
        if not parts.netloc:
            raise SourceError(f"{uri}: an rtsp URI needs a host, e.g. rtsp://192.168.1.5:8554/stream")
        return SourceSpec(uri, scheme, uri, {})
    unknown = sorted(set(options) - OPTIONS[scheme])
    if unknown:
        raise SourceError(f"{uri}: unknown option(s) {', '.join(unknown)} for {scheme}:// "
                          f"(known: {', '.join(sorted(OPTIONS[scheme])) or 'none'})")
    if scheme in ("picam", "csi"):
        if not parts.netloc.isdigit() or parts.path not in ("", "/"):
            raise SourceError(f"{uri}: expected {scheme}://N with a camera number N, e.g. {scheme}://0")
        target = parts.netloc
    elif scheme == "v4l2":
        target = parts.netloc + parts.path if parts.netloc else parts.path
        if not target.startswith("/dev/"):
            raise SourceError(f"{uri}: expected v4l2:///dev/videoN")
    elif scheme == "file":
        target = parts.netloc + parts.path
        if not target:
            raise SourceError(f"{uri}: expected file://PATH (file:///abs/path or file://relative/path)")
    else:  # sim
        target = parts.netloc + parts.path
    spec = SourceSpec(uri, scheme, target, options)
    spec.size()  # validate now, not at open time
    for key in ("rate", "fps", "lens", "stall_after", "disconnect_after", "fail_opens", "frames"):
        spec.number(key, None)
    if "loop" in options:
        spec.flag("loop")
    return spec


# ------------------------------------------------------------------------------------------- cameras


class Camera:
    """A device that yields frames. open() raises SourceError; read() returns an HxWx3 uint8 BGR frame,
    None at the end of a finite stream, and raises SourceError on a disconnect (ImageError for one bad
    frame of a file stream). read() may block (a hung driver); the LiveSource watchdog handles that."""

    finite = False  # True for files: None from read() means the end, not a disconnect
    name = "camera"

    def open(self) -> None:
        """Acquire the device."""

    def read(self) -> np.ndarray | None:
        raise SourceError(f"{self.name}: cannot read")

    def close(self) -> None:
        """Release the device (safe to call twice, from another thread)."""

    def item(self) -> str | None:
        """Name of the item the last frame shows (file path), or None for a camera."""
        return None


class OpenCVCamera(Camera):
    """cv2.VideoCapture on a device index/path, GStreamer pipeline, URL or video file."""

    def __init__(self, target, api: int = cv2.CAP_ANY, name: str = "", size: tuple[int, int] | None = None,
                 fps: float | None = None, finite: bool = False, hint: str = "") -> None:
        self.target, self.api, self.name = target, api, name or str(target)
        self.size, self.fps, self.finite, self.hint = size, fps, finite, hint
        self._cap = None

    def open(self) -> None:
        cap = cv2.VideoCapture(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.name}: cannot open{': ' + self.hint if self.hint else ''}")
        if self.size is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        if not self.finite:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: we want the newest frame
        self._cap = cap

    def read(self) -> np.ndarray | None:
        cap = self._cap
        if cap is None:
            raise SourceError(f"{self.name}: not open")
        ok, frame = cap.read()
        if not ok or frame is None:
            if self.finite:
                return None
            raise SourceError(f"{self.name}: read failed (camera disconnected?)")
        return frame

    def rewind(self) -> None:
        if self._cap is not None:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


class PicamCamera(Camera):
    """Raspberry Pi camera through picamera2, manual (macro) focus at `lens` dioptres."""

    def __init__(self, index: int, size: tuple[int, int] | None, lens: float) -> None:
        self.index, self.size, self.lens = index, size or (2028, 1520), lens
        self.name = f"picam://{index}"
        self._cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError("picam:// needs picamera2 (Raspberry Pi OS: sudo apt install python3-picamera2)") from None
        try:
            cam = Picamera2(self.index)
            # "RGB888" in picamera2 is stored B, G, R in memory: exactly OpenCV's BGR order.
            cam.configure(cam.create_still_configuration(main={"size": self.size, "format": "RGB888"}))
            try:
                from libcamera import controls

                af_manual = controls.AfModeEnum.Manual
            except ImportError:
                af_manual = 0  # libcamera's AfModeManual
            cam.start()
            cam.set_controls({"AfMode": af_manual, "LensPosition": float(self.lens)})
        except Exception as exc:  # libcamera raises RuntimeError/IndexError/OSError variously
            raise SourceError(f"{self.name}: cannot open ({type(exc).__name__}: {exc})") from None
        self._cam = cam

    def read(self) -> np.ndarray | None:
        cam = self._cam
        if cam is None:
            raise SourceError(f"{self.name}: not open")
        try:
            return cam.capture_array("main")
        except Exception as exc:  # picamera2 raises assorted errors on a lost camera
            raise SourceError(f"{self.name}: capture failed ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()


class ImageFilesCamera(Camera):
    """A list of image files, read in order; loop repeats; a bad file raises ImageError for that file only."""

    finite = True

    def __init__(self, paths: list[Path], loop: bool, name: str) -> None:
        self.paths, self.loop, self.name = paths, loop, name
        self._i = 0
        self._item: str | None = None

    def read(self) -> np.ndarray | None:
        if self._i >= len(self.paths):
            if not self.loop:
                return None
            self._i = 0
        path = self.paths[self._i]
        self._i += 1
        self._item = str(path)
        return read_image(path)

    def item(self) -> str | None:
        return self._item


class VideoFileCamera(OpenCVCamera):
    """A video file; loop rewinds at the end."""

    def __init__(self, path: Path, loop: bool) -> None:
        super().__init__(str(path), cv2.CAP_ANY, name=f"file://{path}", finite=True,
                         hint="not a video OpenCV can decode")
        self.loop = loop

    def read(self) -> np.ndarray | None:
        frame = super().read()
        if frame is None and self.loop:
            self.rewind()
            frame = super().read()
        return frame


class SimulatedCamera(Camera):
    """A fake camera for tests and demos: textured frames that, on request, stall or disconnect.

    size (w, h); fps pacing (0 = as fast as possible); stall_after: after that many frames read()
    blocks until close() (a hung driver); disconnect_after: after that many frames read() raises
    SourceError (cable pulled), once per connection; fail_opens: the first N open() calls fail;
    frames: end of stream after that many frames (0 = endless); colour: "red" | "blue" | "grey" cast.
    Counters are shared between reconnects through `state` so a test can watch them.
    """

    def __init__(self, size=(160, 120), fps: float = 0.0, stall_after: int = 0, disconnect_after: int = 0,
                 fail_opens: int = 0, frames: int = 0, colour: str = "grey", state: dict | None = None) -> None:
        self.size, self.fps, self.stall_after, self.disconnect_after = size, fps, stall_after, disconnect_after
        self.fail_opens, self.frames_limit, self.colour = fail_opens, frames, colour
        self.finite = frames > 0
        self.name = "sim://"
        self.state = state if state is not None else {}
        self.state.setdefault("opens", 0)
        self.state.setdefault("reads", 0)
        self._n = 0
        self._closed = threading.Event()
        rng = np.random.default_rng(0)
        w, h = size
        base = rng.integers(60, 190, size=(h, w, 1), dtype=np.int16).repeat(3, axis=2)
        cast = {"red": (-40, 0, 40), "blue": (40, 0, -40), "grey": (0, 0, 0)}[colour]
        self._frame = np.clip(base + np.array(cast, np.int16), 0, 255).astype(np.uint8)

    def open(self) -> None:
        self.state["opens"] += 1
        if self.state["opens"] <= self.fail_opens:
            raise SourceError(f"sim://: simulated open failure {self.state['opens']}/{self.fail_opens}")
        self._closed.clear()
        self._n = 0

    def read(self) -> np.ndarray | None:
        if self._closed.is_set():
            raise SourceError("sim://: closed")
        if self.frames_limit and self.state["reads"] >= self.frames_limit:
            return None
        if self.stall_after and self._n >= self.stall_after:
            self._closed.wait()  # hang like a stuck driver until someone closes us
            raise SourceError("sim://: closed while stalled")
        if self.disconnect_after and self._n >= self.disconnect_after:
            raise SourceError("sim://: simulated disconnect")
        if self.fps:
            time.sleep(1.0 / self.fps)
        self._n += 1
        self.state["reads"] += 1
        frame = self._frame.copy()
        frame[0, 0, 0] = self.state["reads"] % 256  # frames differ, like a real sensor's
        return frame

    def close(self) -> None:
        self._closed.set()


def _file_paths(target: str) -> tuple[list[Path], Path | None]:
    """(image files, video file) named by a file:// target: a file, a folder or a glob."""
    if any(ch in target for ch in "*?["):
        paths = sorted(Path(p) for p in globlib.glob(target, recursive=True)
                       if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SourceError(f"file://{target}: the glob matches no image files")
        return paths, None
    path = Path(target)
    if path.is_dir():
        paths = list_images(path)
        if not paths:
            raise SourceError(f"file://{target}: no image files in that folder")
        return paths, None
    if not path.is_file():
        raise SourceError(f"file://{target}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return [], path
    if suffix in IMAGE_SUFFIXES:
        return [path], None
    raise SourceError(f"file://{target}: not an image ({', '.join(IMAGE_SUFFIXES)}) or video "
                      f"({', '.join(VIDEO_SUFFIXES)}) file")


def csi_pipeline(sensor: int, width: int, height: int, fps: int) -> str:
    """GStreamer pipeline for a Jetson CSI camera (Argus), ending in a one-buffer dropping appsink."""
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width={width},height={height},"
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! "
            "video/x-raw,format=BGR ! appsink drop=true max-buffers=1")


def make_camera_factory(spec: SourceSpec, loop: bool = False) -> Callable[[], Camera]:
    """A function that makes a fresh Camera for `spec` (called again on every reconnect)."""
    size = spec.size()
    if spec.scheme == "picam":
        lens = spec.number("lens", 10.0)
        return lambda: PicamCamera(int(spec.target), size, lens)
    if spec.scheme == "csi":
        w, h = size or (1920, 1080)
        fps = int(spec.number("fps", 30))
        pipe = csi_pipeline(int(spec.target), w, h, fps)
        return lambda: OpenCVCamera(pipe, cv2.CAP_GSTREAMER, name=spec.uri,
                                    hint="is nvargus-daemon running, and is this JetPack's OpenCV with "
                                         "GStreamer (pip's opencv-python has none)?")
    if spec.scheme == "v4l2":
        fps = spec.number("fps", None)
        return lambda: OpenCVCamera(spec.target, cv2.CAP_V4L2, name=spec.uri, size=size, fps=fps,
                                    hint="no such device, busy, or no permission (video group)?")
    if spec.scheme == "rtsp":
        return lambda: OpenCVCamera(spec.target, cv2.CAP_FFMPEG, name=spec.uri,
                                    hint="stream unreachable or not RTSP")
    if spec.scheme == "sim":
        kw = dict(size=size or (160, 120), fps=spec.number("fps", 0.0),
                  stall_after=int(spec.number("stall_after", 0)),
                  disconnect_after=int(spec.number("disconnect_after", 0)),
                  fail_opens=int(spec.number("fail_opens", 0)), frames=int(spec.number("frames", 0)),
                  colour=spec.options.get("colour", "grey"))
        if kw["colour"] not in ("red", "blue", "grey"):
            raise SourceError(f"{spec.uri}: colour must be red, blue or grey")
        state: dict = {}
        return lambda: SimulatedCamera(state=state, **kw)
    paths, video = _file_paths(spec.target)
    loop = loop or spec.flag("loop")
    if video is not None:
        return lambda: VideoFileCamera(video, loop)
    return lambda: ImageFilesCamera(paths, loop, f"file://{spec.target}")


# ------------------------------------------------------------------------------------------- sources


@dataclass
class Frame:
    """One captured frame. image: HxWx3 uint8 BGR; index: sequence number from the source (gaps mean
    dropped frames); ts: capture time (unix s); item: file name for file sources, else None.
    quality, gate_ms, prepared: filled ahead of time by edge_runtime.prefetch.PrefetchSource (the gate's
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
