"""The quality gate fitted to what a model was trained on.

The default gate (edge_runtime.quality.QualityConfig) was set for macro photos of printed tags. Items such as
signatures on white paper are "too bright" by that default (mean grey ~240, and binarised scans are nearly all
clipped pixels), so a scanner trained on them would send every frame back for a retake. At the end of
training the gate's measurements of the train photos fix, per bundle, how far each threshold must move so
that at most `reject_rate` of those photos fail it:

    min_focus      = min(default, FOCUS_MARGIN * q(focus, r)), not below FOCUS_FLOOR
    min_brightness = min(default, q(brightness, r) - BRIGHTNESS_MARGIN), not below 0
    max_brightness = max(default, q(brightness, 1 - r) + BRIGHTNESS_MARGIN), not above 255
    max_clipped    = max(default, q(clipped, 1 - r) + CLIPPED_MARGIN), not above 1

Thresholds only loosen: a training set of sharp, well-exposed photos keeps the defaults (a stricter gate
than the one the field has used would be a surprise). FOCUS_FLOOR keeps blank and defocused frames out
(their Laplacian variance is ~0-2 on the real sets, docs/results/quality_fit.md). The focus measure depends
on the photo's scale: the fit is only as good as the train photos' likeness to the camera's frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge_runtime.quality import QualityConfig, QualityResult

FIT_REJECT_RATE = 0.01  # largest fraction of train photos each fitted threshold may refuse
FOCUS_MARGIN = 0.5  # a frame half as sharp as the softest train photos still passes
FOCUS_FLOOR = 2.0  # the fit never lets min_focus fall below this (blank/defocused frames measure ~0-2)
BRIGHTNESS_MARGIN = 10.0  # grey levels beyond the train photos' range
CLIPPED_MARGIN = 0.05  # fraction of clipped pixels beyond the train photos'


@dataclass(frozen=True)
class GateMeasures:
    """The gate's measurements of n photos: focus, brightness, clipped, each [n] float64."""

    focus: np.ndarray
    brightness: np.ndarray
    clipped: np.ndarray

    def __post_init__(self) -> None:
        n = {len(self.focus), len(self.brightness), len(self.clipped)}
        if len(n) != 1 or 0 in n:
            raise ValueError("quality fit: need the same number (>= 1) of focus, brightness and clipped values")

    @classmethod
    def of(cls, results: Sequence[QualityResult]) -> "GateMeasures":
        """The measurements check_frame returned for a list of frames."""
        return cls(np.array([r.focus for r in results]), np.array([r.brightness for r in results]),
                   np.array([r.clipped for r in results]))


def refused(cfg: QualityConfig, m: GateMeasures) -> int:
    """How many of the measured photos `cfg` would send for a retake (QualityConfig.refusal, as check_frame)."""
    return sum(cfg.refusal(*v) is not None for v in zip(m.focus, m.brightness, m.clipped))


def fit_gate(m: GateMeasures, base: QualityConfig = QualityConfig(),
             reject_rate: float = FIT_REJECT_RATE) -> tuple[QualityConfig, dict]:
    """The gate loosened (never tightened) so that each threshold refuses at most ~reject_rate of the photos.

    Returns the config and the record a manifest keeps: {"thresholds": {...}, "n", "reject_rate",
    "refused_by_default", "refused_after", "measured": quantiles of each measure}."""
    if not 0.0 <= reject_rate < 0.5:
        raise ValueError(f"quality fit: reject_rate must be in [0, 0.5), got {reject_rate}")
    lo, hi = reject_rate, 1.0 - reject_rate
    q = lambda a, p: float(np.quantile(np.asarray(a, dtype=np.float64), p))  # noqa: E731
    min_focus = max(min(base.min_focus, FOCUS_MARGIN * q(m.focus, lo)), min(FOCUS_FLOOR, base.min_focus))
    min_b = max(min(base.min_brightness, q(m.brightness, lo) - BRIGHTNESS_MARGIN), 0.0)
    max_b = min(max(base.max_brightness, q(m.brightness, hi) + BRIGHTNESS_MARGIN), 255.0)
    max_c = min(max(base.max_clipped, q(m.clipped, hi) + CLIPPED_MARGIN), 1.0)
    cfg = base.with_thresholds({"min_focus": round(min_focus, 3), "min_brightness": round(min_b, 2),
                                "max_brightness": round(max_b, 2), "max_clipped": round(max_c, 4)})
    record = {
        "thresholds": cfg.thresholds(), "n": len(m.focus), "reject_rate": reject_rate,
        "refused_by_default": refused(base, m), "refused_after": refused(cfg, m),
        "measured": {name: {"q_lo": round(q(v, lo), 3), "median": round(q(v, 0.5), 3), "q_hi": round(q(v, hi), 3)}
                     for name, v in (("focus", m.focus), ("brightness", m.brightness), ("clipped", m.clipped))},
    }
    return cfg, record


def gate_for_bundle(record: dict | None, base: QualityConfig = QualityConfig()) -> QualityConfig:
    """The gate a bundle asks for: `base` with the record's thresholds, or `base` for a bundle without one."""
    return base if not record else base.with_thresholds(record["thresholds"])


def describe_gate_fit(record: dict) -> str:
    """One line: what the fitted gate accepts and what it came from."""
    t = record["thresholds"]
    return (f"quality gate fitted on {record['n']} train photos: focus >= {t['min_focus']:g}, brightness "
            f"{t['min_brightness']:g}..{t['max_brightness']:g}, clipped <= {t['max_clipped']:.0%} "
            f"(defaults refused {record['refused_by_default']}, fitted {record['refused_after']})")
