"""Per-file image metadata (size, format, JPEG quality, bytes per pixel, EXIF camera) and the metadata
feature matrix the shortcut baseline is fitted on.

    meta = read_meta(path.read_bytes(), "train/genuine/a.jpg")   # ImageMeta
    x, names = meta_matrix([meta, ...])                            # [N, len(META_COLUMNS)] float64

The JPEG quality is estimated from the file's quantisation tables: the quality q in 1..100 whose scaled
standard tables (JPEG spec Annex K, scaled the way libjpeg does, which PIL and OpenCV use) are closest to
the file's. Files written by libjpeg-based software match exactly (`jpeg_standard_tables`); camera files
with their own tables get the nearest equivalent quality.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass

import numpy as np

# Annex K.1 (luminance) and K.2 (chrominance) base tables, natural (row-major) order.
_LUMA_BASE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], np.int64)
_CHROMA_BASE = np.full(64, 99, np.int64)
_CHROMA_BASE[[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 24, 25]] = [17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 47, 66]

# Feature columns of meta_matrix. A lossless file counts as JPEG quality 100.
META_COLUMNS = ("width", "height", "jpeg_quality", "bytes_per_pixel", "aspect", "is_jpeg", "is_png", "has_exif")
LOSSLESS_QUALITY = 100.0

_EXIF_MAKE, _EXIF_MODEL = 0x010F, 0x0110
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}


def _zigzag() -> np.ndarray:
    """[64] int: natural (row-major) index of each zigzag position."""
    cells = sorted(((r, c) for r in range(8) for c in range(8)),
                   key=lambda rc: (rc[0] + rc[1], rc[0] if (rc[0] + rc[1]) % 2 else rc[1]))
    return np.array([r * 8 + c for r, c in cells], np.int64)


_ZIGZAG = _zigzag()


def scaled_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """libjpeg's quality scaling of the Annex K tables: (luma [64], chroma [64]) int64, natural order."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(np.clip((base * scale + 50) // 100, 1, 255) for base in (_LUMA_BASE, _CHROMA_BASE))


_ALL_TABLES = [scaled_tables(q) for q in range(1, 101)]
_LUMA_Q = np.stack([t[0] for t in _ALL_TABLES]).astype(np.float64)  # [100, 64]
_CHROMA_Q = np.stack([t[1] for t in _ALL_TABLES]).astype(np.float64)


def jpeg_quality(tables: dict[int, list[int]]) -> tuple[float, bool]:
    """Estimate the quality a JPEG was saved with from its quantisation tables.

    tables: PIL's `Image.quantization` ({0: luma [64], 1: chroma [64], ...}; natural order in current
    Pillow, zigzag in older releases: both orders are tried). Returns (quality 1..100, True when the
    tables are exactly libjpeg's scaled standard tables).
    """
    if 0 not in tables or len(tables[0]) != 64:
        raise ValueError("JPEG quantisation tables need a 64-entry luma table")
    best_err, best_q = np.inf, 100
    for order in (np.arange(64), _ZIGZAG):
        luma = np.empty(64)
        luma[order] = np.asarray(tables[0], np.float64)
        err = np.abs(_LUMA_Q - luma).sum(1)
        if 1 in tables and len(tables[1]) == 64:
            chroma = np.empty(64)
            chroma[order] = np.asarray(tables[1], np.float64)
            err = err + np.abs(_CHROMA_Q - chroma).sum(1)
        q = int(np.argmin(err))
        if err[q] < best_err:
            best_err, best_q = float(err[q]), q + 1
    return float(best_q), best_err == 0.0


@dataclass(frozen=True)
class ImageMeta:
    """What the file says about an image, before any pixel is looked at.

    width, height: stored pixel size (EXIF orientation not applied); format: PIL's name ("JPEG", "PNG",
    ...; "unknown" when PIL cannot parse the header); bytes: file size; jpeg_quality: estimated quality
    (None unless JPEG); jpeg_standard_tables: libjpeg's scaled tables exactly (None unless JPEG);
    subsampling: chroma subsampling of a JPEG ("4:2:0", ...); camera: EXIF make and model, or None;
    has_exif: any EXIF tag present.
    """

    width: int
    height: int
    format: str
    bytes: int
    jpeg_quality: float | None
    jpeg_standard_tables: bool | None
    subsampling: str | None
    camera: str | None
    has_exif: bool

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @property
    def bytes_per_pixel(self) -> float:
        return self.bytes / (self.width * self.height)

    def to_dict(self) -> dict:
        return {**asdict(self), "aspect": self.aspect, "bytes_per_pixel": self.bytes_per_pixel}


def read_meta(data: bytes, shape: tuple[int, ...]) -> ImageMeta:
    """Metadata of one encoded image file.

    data: the file's bytes; shape: the decoded array's shape (H, W, ...), used when PIL cannot parse the
    header (the file was decoded by OpenCV, so it is an image). PIL reads the header only.
    """
    from PIL import Image, JpegImagePlugin

    height, width = int(shape[0]), int(shape[1])
    fmt, quality, standard, sampling, camera, has_exif = "unknown", None, None, None, None, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's decompression-bomb warning: read_image already bounds size
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "unknown"
                width, height = im.size
                if fmt == "JPEG":
                    if getattr(im, "quantization", None):
                        quality, standard = jpeg_quality(im.quantization)
                    sampling = _SUBSAMPLING.get(JpegImagePlugin.get_sampling(im))
                exif = im.getexif()
                has_exif = len(exif) > 0
                parts = [str(exif.get(t, "")).strip("\x00 ") for t in (_EXIF_MAKE, _EXIF_MODEL)]
                camera = " ".join(p for p in parts if p) or None
    except Exception:  # a header PIL cannot parse: keep OpenCV's size, leave the rest unknown
        pass
    return ImageMeta(int(width), int(height), fmt, len(data), quality, standard, sampling, camera, has_exif)


def meta_matrix(metas: list[ImageMeta]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Feature matrix of the metadata baseline: [N, len(META_COLUMNS)] float64 and the column names."""
    rows = [[m.width, m.height, LOSSLESS_QUALITY if m.jpeg_quality is None else m.jpeg_quality,
             m.bytes_per_pixel, m.aspect, m.format == "JPEG", m.format == "PNG", m.has_exif] for m in metas]
    return np.asarray(rows, np.float64).reshape(len(metas), len(META_COLUMNS)), META_COLUMNS
