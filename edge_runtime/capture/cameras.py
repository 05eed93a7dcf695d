"""Cameras behind the frame sources: URIs parsed into a SourceSpec, one Camera class per kind of
device or file, and `make_camera_factory`. edge_runtime/capture/sources.py runs them (capture thread, watchdog,
reconnects, latest-frame slot).

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

from edge_runtime.errors import SourceError
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
