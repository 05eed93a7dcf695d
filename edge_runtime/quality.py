"""Quality gate: is a camera frame worth running the model on?

Focus: variance of the Laplacian of the grey centre square (micro features are only there when the
macro lens is in focus). Exposure: mean grey level too dark / too bright, and the fraction of clipped
pixels (blown highlights or crushed shadows). The gate also returns a small grey-level histogram of
the frame, which the scan session uses to notice that a different item is in view.

Cost does not grow with the camera resolution: focus is measured at full resolution on the centre
`analysis_size` window (where the macro lens is sharpest), exposure on a nearest-neighbour subsample of the
centre square (the part the model sees) of about analysis_size x analysis_size pixels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.preprocess import square_crop_box

FITTED = ("min_focus", "min_brightness", "max_brightness", "max_clipped")  # the thresholds a bundle may set


@dataclass(frozen=True)
class QualityConfig:
    """Gate thresholds.

    min_focus: minimum variance of the Laplacian (on 0..255 grey at analysis_size); lower is blurry.
    min_brightness / max_brightness: allowed mean grey level (0..255).
    max_clipped: largest allowed fraction of pixels at <= clip_low or >= clip_high.
    analysis_size: side of the centre window for focus and of the exposure subsample grid.
    enabled: False passes every frame (still measuring, so events carry the numbers).
    """

    min_focus: float = 25.0
    min_brightness: float = 35.0
    max_brightness: float = 225.0
    max_clipped: float = 0.25
    clip_low: int = 3
    clip_high: int = 252
    analysis_size: int = 384
    hist_bins: int = 32
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.min_focus < 0 or not 0 <= self.min_brightness < self.max_brightness <= 255:
            raise ValueError("quality: need min_focus >= 0 and 0 <= min_brightness < max_brightness <= 255")
        if not 0.0 < self.max_clipped <= 1.0:
            raise ValueError("quality.max_clipped must be in (0, 1]")
        if self.analysis_size < 16:
            raise ValueError("quality.analysis_size must be >= 16")

    def refusal(self, focus: float, brightness: float, clipped: float) -> str | None:
        """Why a frame with these measurements is sent for a retake ("too dark ...", ...), or None; the
        checks in order: exposure first (a dark frame also measures blurry), then focus. Not `enabled`: None."""
        if not self.enabled:
            return None
        if brightness < self.min_brightness:
            return f"too dark (mean {brightness:.0f} < {self.min_brightness:.0f})"
        if brightness > self.max_brightness:
            return f"too bright (mean {brightness:.0f} > {self.max_brightness:.0f})"
        if clipped > self.max_clipped:
            return f"clipped exposure ({clipped:.0%} of pixels clipped > {self.max_clipped:.0%})"
        if focus < self.min_focus:
            return f"out of focus (sharpness {focus:.1f} < {self.min_focus:.1f})"
        return None

    def thresholds(self) -> dict:
        """The four fitted thresholds (edge_runtime.quality_fit), as a bundle's manifest records them."""
        return {k: getattr(self, k) for k in FITTED}

    def with_thresholds(self, values: dict) -> "QualityConfig":
        """This config with FITTED thresholds replaced from `values` (a manifest's record); ValueError if bad."""
        unknown = sorted(set(values) - set(FITTED))
        if unknown:
            raise ValueError(f"quality: unknown thresholds {', '.join(unknown)}")
        return dataclasses.replace(self, **{k: float(v) for k, v in values.items()})


@dataclass(frozen=True)
class QualityResult:
    """ok: frame passes. reason: why not ("out of focus ...", "too dark ...", ...) or None.
    focus, brightness, clipped: the measurements. hist: [hist_bins] float32 grey histogram, sum 1."""

    ok: bool
    reason: str | None
    focus: float
    brightness: float
    clipped: float
    hist: np.ndarray


def check_frame(bgr: np.ndarray, cfg: QualityConfig) -> QualityResult:
    """Measure focus and exposure of an HxWx3 uint8 BGR frame and apply the thresholds."""
    x0, y0, side = square_crop_box(*bgr.shape[:2])
    n = min(side, cfg.analysis_size)
    cx, cy = x0 + (side - n) // 2, y0 + (side - n) // 2
    window = cv2.cvtColor(bgr[cy : cy + n, cx : cx + n], cv2.COLOR_BGR2GRAY)
    _, std = cv2.meanStdDev(cv2.Laplacian(window, cv2.CV_32F))
    focus = float(std[0, 0]) ** 2
    square = bgr[y0 : y0 + side, x0 : x0 + side]
    if side > cfg.analysis_size:  # nearest-neighbour subsample: cheap, and enough for a histogram
        square = cv2.resize(square, (cfg.analysis_size,) * 2, interpolation=cv2.INTER_NEAREST)
    sample = cv2.cvtColor(square, cv2.COLOR_BGR2GRAY)
    hist = cv2.calcHist([sample], [0], None, [256], [0, 256]).ravel()
    total = float(hist.sum())
    brightness = float(np.dot(hist, np.arange(256, dtype=np.float32)) / total)
    clipped = float((hist[: cfg.clip_low + 1].sum() + hist[cfg.clip_high :].sum()) / total)
    coarse = (hist.reshape(cfg.hist_bins, -1).sum(axis=1) / total).astype(np.float32)
    reason = cfg.refusal(focus, brightness, clipped)
    return QualityResult(reason is None, reason, focus, brightness, clipped, coarse)
