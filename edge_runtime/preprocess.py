"""The one preprocessing path: image reading and validation, adaptive contrast enhancement (CLAHE on
luminance: L of LAB or Y of YCrCb), brightness normalisation, resizing and conversion to float32 NCHW.

Training, calibration, export parity checks and the scanner all call these functions, so what a model
was trained on is exactly what it sees on the device. numpy + OpenCV only.

Pipeline for one camera frame (any size, BGR uint8 as OpenCV delivers it):
    prepare_frame(bgr, cfg)        -> F x F x 3 uint8 RGB   (square centre crop, resize, ACE, brightness)
    global_input(frame, cfg)       -> 1 x 3 x S x S float32 in [0, 1]
    roi.crop_rois(frame, boxes, R) -> K x 3 x R x R float32 in [0, 1]  (crops from the F x F frame)
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import ImageError

MIN_SIDE = 32  # smaller frames carry no micro detail worth classifying
MAX_PIXELS = 200_000_000  # refuse decompression bombs; a 12000 x 12000 frame (144 Mpx) still passes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# The luminance space enhancement runs in: (BGR -> space, space -> BGR, space -> RGB) OpenCV codes.
# LAB's conversions are float maths with cube roots (~5.7 ms both ways for a 768 px frame on one x86
# core); YCrCb's are integer matrix products (~0.5 ms), with the same CLAHE and gain on its Y channel.
LUMA_SPACES = {
    "lab": (cv2.COLOR_BGR2LAB, cv2.COLOR_LAB2BGR, cv2.COLOR_LAB2RGB),
    "ycrcb": (cv2.COLOR_BGR2YCrCb, cv2.COLOR_YCrCb2BGR, cv2.COLOR_YCrCb2RGB),
}


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing parameters. They travel in every checkpoint and bundle manifest.

    frame_size: side F of the square frame crops are taken from (the micro-feature pixel scale).
    global_size: side S of the global view fed to global.onnx.
    crop_size: side R of each ROI crop fed to parts.onnx.
    ace: apply CLAHE to the luminance channel.
    clahe_clip, clahe_grid: CLAHE clip limit and tile grid (grid x grid tiles).
    brightness_target: mean luminance in [0, 1] after a gain on it; None leaves brightness alone.
    luma_space: where luminance comes from (LUMA_SPACES): "lab" (L; both presets, and checkpoints and
        bundles that do not name a space) or "ycrcb" (Y; cheaper conversions, a different model input).
    """

    frame_size: int = 1024
    global_size: int = 448
    crop_size: int = 224
    ace: bool = True
    clahe_clip: float = 2.0
    clahe_grid: int = 8
    brightness_target: float | None = 0.5
    luma_space: str = "lab"

    def __post_init__(self) -> None:
        for name in ("frame_size", "global_size", "crop_size", "clahe_grid"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"preprocess.{name} must be a positive integer, got {value!r}")
        if self.crop_size > self.frame_size or self.global_size > self.frame_size:
            raise ValueError("preprocess: crop_size and global_size must not exceed frame_size")
        if self.clahe_clip <= 0:
            raise ValueError("preprocess.clahe_clip must be > 0")
        if self.brightness_target is not None and not 0.0 < self.brightness_target < 1.0:
            raise ValueError("preprocess.brightness_target must be in (0, 1) or null")
        if self.luma_space not in LUMA_SPACES:
            raise ValueError(f"preprocess.luma_space must be one of {', '.join(LUMA_SPACES)}, "
                             f"got {self.luma_space!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessConfig":
        """Build from a manifest/checkpoint dict; unknown keys are an error, missing keys take defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocess keys: {', '.join(unknown)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------- reading


def _looks_truncated(data: bytes) -> bool:
    """True when a PNG lacks its IEND chunk or a JPEG its EOI marker (OpenCV decodes those silently)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in data[-32:]
    if data.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in data[-16:]
    return False


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT/JPG/DAC)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding, or None for other or odd data.

    Lets decode_image refuse a decompression bomb before OpenCV allocates its pixels.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"BM") and len(data) >= 26:
        return (abs(int.from_bytes(data[18:22], "little", signed=True)),
                abs(int.from_bytes(data[22:26], "little", signed=True)))
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 4 <= len(data) and data[i] == 0xFF:
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
                i += 2
                continue
            if marker in _JPEG_SOF and i + 9 <= len(data):
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
            if marker == 0xDA:  # start of scan: no frame header before it
                return None
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to HxWx3 uint8 BGR.

    Grayscale, RGBA and 16-bit files are converted (see to_bgr8). Zero-byte, truncated and non-image
    data raise ImageError naming `name`; so does a PNG/JPEG/BMP whose header declares more than
    MAX_PIXELS pixels, before any pixel memory is allocated.
    """
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    if _looks_truncated(data):
        raise ImageError(f"{name}: truncated image file")
    size = header_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise ImageError(f"{name}: frame {size[0]}x{size[1]} is too large (maximum {MAX_PIXELS} pixels)")
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV asserts on some headers (e.g. beyond its own pixel limit)
        raise ImageError(f"{name}: not a readable image ({_cv_reason(exc)})") from None
    if img is None:
        raise ImageError(f"{name}: not a readable image")
    return to_bgr8(img, name)


def _cv_reason(exc: Exception) -> str:
    """The one informative line of an OpenCV error ("(-215:Assertion failed) ... in function 'f'")."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text.split(" error: ", 1)[-1]


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file to HxWx3 uint8 BGR, with the checks of decode_image."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror})") from None
    return decode_image(data, str(path))


def to_bgr8(img: np.ndarray, name: str = "<array>") -> np.ndarray:
    """Convert a decoded image or camera array to HxWx3 uint8 BGR.

    Accepts HxW or HxWx1 (grayscale), HxWx3 (BGR), HxWx4 (BGRA: alpha dropped); dtype uint8, uint16
    (scaled by 1/257) or float in [0, 1]. Anything else, or a frame smaller than MIN_SIDE or larger than
    MAX_PIXELS, raises ImageError.
    """
    if not isinstance(img, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array, got {type(img).__name__}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: unsupported image shape {tuple(img.shape)} (need HxW, HxWx3 or HxWx4)")
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: frame {w}x{h} is too small (minimum {MIN_SIDE}x{MIN_SIDE})")
    if h * w > MAX_PIXELS:
        raise ImageError(f"{name}: frame {w}x{h} is too large (maximum {MAX_PIXELS} pixels)")
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=1.0 / 257.0)  # round(x / 257), no wide temporary copies
    elif img.dtype in (np.float32, np.float64):
        if not np.isfinite(img).all() or img.min() < 0.0 or img.max() > 1.0:
            raise ImageError(f"{name}: float images must hold finite values in [0, 1]")
        img = np.round(img * 255.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported pixel type {img.dtype} (need uint8, uint16 or float)")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, :3])
    return np.ascontiguousarray(img)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursive), sorted by relative path so every caller sees one order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def evenly_spaced(items: list, limit: int | None) -> list:
    """At most `limit` of `items` (all for None), evenly spaced over the list: over a sorted list of
    labelled images both classes stay represented."""
    if limit is None or len(items) <= limit:
        return items
    return [items[(i * len(items)) // limit] for i in range(limit)]


# ---------------------------------------------------------------------------------------- enhancement


@functools.lru_cache(maxsize=8)
def _clahe(clip: float, grid: int) -> cv2.CLAHE:
    return cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid))


def _enhance_luma(planes: np.ndarray, cfg: PreprocessConfig) -> None:
    """CLAHE and the brightness gain on channel 0 (L or Y) of HxWx3 uint8 `planes` (LAB or YCrCb), in place."""
    lum = np.ascontiguousarray(planes[:, :, 0])  # a copy: OpenCV wants a contiguous plane
    if cfg.ace:
        _clahe(float(cfg.clahe_clip), int(cfg.clahe_grid)).apply(lum, dst=lum)
    if cfg.brightness_target is not None:
        # The exact integer sum over the pixel count: the same float64 as lum.mean(), ten times faster.
        mean = cv2.sumElems(lum)[0] / lum.size
        gain = cfg.brightness_target * 255.0 / max(mean, 1.0)
        cv2.convertScaleAbs(lum, dst=lum, alpha=gain)  # saturating uint8
    planes[:, :, 0] = lum


def enhance(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Adaptive contrast enhancement and brightness normalisation on luminance.

    bgr: HxWx3 uint8 BGR. Returns HxWx3 uint8 BGR. CLAHE (cfg.clahe_clip, cfg.clahe_grid) runs on the
    luminance of cfg.luma_space (L of LAB or Y of YCrCb); then it is scaled so its mean is
    cfg.brightness_target * 255. Colour (a, b or Cr, Cb) is kept, since colour can be an authentication cue.
    """
    if not cfg.ace and cfg.brightness_target is None:
        return bgr
    to_space, to_bgr, _ = LUMA_SPACES[cfg.luma_space]
    planes = cv2.cvtColor(bgr, to_space)
    _enhance_luma(planes, cfg)
    return cv2.cvtColor(planes, to_bgr, dst=planes)


def square_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """The centred square a frame is cropped to: (x0, y0, side) in source pixels."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize HxWxC uint8 to size x size: area averaging when shrinking, bilinear when enlarging."""
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def square_frame(img: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """The centred square of HxW[xC] uint8 `img`, resized to size x size (`resize`, or nearest-neighbour
    for masks). The geometry every frame and its mask go through before enhancement."""
    x0, y0, side = square_crop_box(*img.shape[:2])
    square = img[y0 : y0 + side, x0 : x0 + side]
    if nearest:
        return cv2.resize(square, (size, size), interpolation=cv2.INTER_NEAREST)
    return resize(square, size)


def prepare_frame(bgr: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Camera frame -> the square frame the model sees.

    bgr: HxWx3 uint8 BGR (validate foreign arrays with to_bgr8 first). Returns F x F x 3 uint8 RGB,
    F = cfg.frame_size: `square_frame`, then `enhance`.
    """
    square = square_frame(bgr, cfg.frame_size)
    if not cfg.ace and cfg.brightness_target is None:
        return cv2.cvtColor(square, cv2.COLOR_BGR2RGB)
    # enhance() then BGR -> RGB, with space -> RGB in one conversion (bit-identical: checked over all
    # 2^24 triples of both spaces) and in place, so the frame costs one new array.
    to_space, _, to_rgb = LUMA_SPACES[cfg.luma_space]
    planes = cv2.cvtColor(square, to_space)
    _enhance_luma(planes, cfg)
    return cv2.cvtColor(planes, to_rgb, dst=planes)


def to_nchw(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 or NxHxWx3 uint8 -> 1x3xHxW or Nx3xHxW float32 in [0, 1] (C-contiguous)."""
    batch = rgb[None] if rgb.ndim == 3 else rgb
    out = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    out *= 1.0 / 255.0
    return out


def global_input(frame: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """F x F x 3 uint8 RGB frame -> 1x3xSxS float32 in [0, 1], S = cfg.global_size (area resize)."""
    return to_nchw(resize(frame, cfg.global_size))


def load_frame(path: str | Path, cfg: PreprocessConfig) -> np.ndarray:
    """read_image + prepare_frame: an image file -> F x F x 3 uint8 RGB."""
    return prepare_frame(read_image(path), cfg)
