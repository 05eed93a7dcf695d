"""The picture `mgfen-eval --ood DIR --out OUT` writes: histograms of the novelty score on the checkpoint's
own split and on DIR, with the `unknown` threshold marked.

    hist = histogram(own_scores, ood_scores, threshold)     # shared log-spaced bins, counts per set
    draw(hist, threshold, OUT / HISTOGRAM_FILE, labels=("test (n 30)", "textures (n 60)"))

The x axis is log-scaled: in-domain scores sit around the threshold while noise or flat frames score tens
to thousands of times higher, and a linear axis would squeeze the in-domain side into one bar. Each set's
bars are the fraction of that set (the two sets differ in size). Drawn with OpenCV, as
train.evaluate.risk_coverage draws its picture (no plotting library).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

HISTOGRAM_FILE = "ood_histogram.png"
BINS = 40
IN_COLOUR, OOD_COLOUR, THRESHOLD_COLOUR = (180, 119, 31), (14, 127, 255), (40, 39, 214)  # BGR
_FLOOR = 1e-12  # scores are squared distances (>= 0); a zero one is drawn in the first bin


def histogram(own: np.ndarray, ood: np.ndarray, threshold: float, bins: int = BINS) -> dict:
    """own [N], ood [M] float scores, threshold float -> {"edges": [bins+1] ascending bin edges (score units,
    log-spaced over every score and the threshold, a little wider), "in_domain": [bins] counts of `own`,
    "ood": [bins] counts of `ood`}. Either set may be empty."""
    values = np.concatenate([np.asarray(own, np.float64).reshape(-1), np.asarray(ood, np.float64).reshape(-1),
                             [float(threshold)]])
    logs = np.log10(np.maximum(values, _FLOOR))
    lo, hi = float(logs.min()), float(logs.max())
    pad = max(0.05 * (hi - lo), 0.05)
    edges = np.logspace(lo - pad, hi + pad, bins + 1)

    def counts(scores: np.ndarray) -> list[int]:
        s = np.clip(np.asarray(scores, np.float64).reshape(-1), edges[0], edges[-1])
        return [int(c) for c in np.histogram(s, bins=edges)[0]]

    return {"edges": [float(e) for e in edges], "in_domain": counts(own), "ood": counts(ood)}


def _ticks(lo: float, hi: float) -> list[float]:
    """Tick values between 10**lo and 10**hi: every power of ten, or 1-2-5 steps when the span has fewer
    than three powers of ten."""
    decades = range(math.floor(lo), math.ceil(hi) + 1)
    powers = [10.0 ** d for d in decades if lo <= d <= hi]
    if len(powers) >= 3:
        return powers
    return [m * 10.0 ** d for d in decades for m in (1, 2, 5) if lo <= math.log10(m * 10.0 ** d) <= hi]


def _tick(v: float) -> str:
    return f"{v:.2g}" if v < 1000 else f"{v:.0e}".replace("e+0", "e").replace("e+", "e")


def draw(hist: dict, threshold: float, path: Path, labels: tuple[str, str] = ("in-domain", "ood"),
         title: str = "novelty score", width: int = 720, height: int = 420) -> None:
    """PNG of a `histogram`: per bin, the fraction of each set (in-domain blue, ood orange) on a log score
    axis, the threshold as a red vertical line, `labels` in the legend. Raises OSError when the file cannot
    be written."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 56, 20, 64, 52
    pw, ph = width - left - right, height - top - bottom
    font = cv2.FONT_HERSHEY_SIMPLEX
    edges = np.log10(np.asarray(hist["edges"], np.float64))
    sets = [(np.asarray(hist["in_domain"], np.float64), IN_COLOUR), (np.asarray(hist["ood"], np.float64), OOD_COLOUR)]
    fractions = [(c / c.sum() if c.sum() else c, colour) for c, colour in sets]
    y_max = max(0.05, max(float(f.max()) for f, _ in fractions) * 1.1)

    def x_of(log_score: float) -> int:
        return int(round(left + pw * (log_score - edges[0]) / (edges[-1] - edges[0])))

    def y_of(frac: float) -> int:
        return int(round(top + ph - ph * frac / y_max))

    for i in range(5):
        y = y_of(y_max * i / 4)
        cv2.line(img, (left, y), (left + pw, y), (225, 225, 225), 1)
        cv2.putText(img, f"{100 * y_max * i / 4:.0f}", (8, y + 5), font, 0.42, (80, 80, 80), 1, cv2.LINE_AA)
    for value in _ticks(float(edges[0]), float(edges[-1])):
        x = x_of(math.log10(value))
        cv2.line(img, (x, top + ph), (x, top + ph + 4), (0, 0, 0), 1)
        cv2.putText(img, _tick(value), (x - 12, top + ph + 18), font, 0.42, (80, 80, 80), 1, cv2.LINE_AA)
    for b in range(len(edges) - 1):
        x0, x1 = x_of(edges[b]), x_of(edges[b + 1])
        mid = (x0 + x1) // 2
        for (frac, colour), (a, z) in zip(fractions, ((x0 + 1, mid), (mid, x1 - 1))):
            if frac[b] > 0:
                cv2.rectangle(img, (a, y_of(float(frac[b]))), (max(a, z), top + ph), colour, -1)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    xt = x_of(math.log10(max(float(threshold), _FLOOR)))
    cv2.line(img, (xt, top), (xt, top + ph), THRESHOLD_COLOUR, 2, cv2.LINE_AA)
    cv2.putText(img, f"threshold {threshold:.3g}", (min(xt + 4, left + pw - 110), top + 14), font, 0.42,
                THRESHOLD_COLOUR, 1, cv2.LINE_AA)
    cv2.putText(img, "% of each set", (8, top - 10), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"{title} (log scale; above the threshold: unknown)", (left + pw // 2 - 190, height - 10),
                font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for row, (label, (_, colour)) in enumerate(zip(labels, sets)):
        y = 16 + 20 * row
        cv2.rectangle(img, (left + 110, y - 10), (left + 124, y + 2), colour, -1)
        cv2.putText(img, label, (left + 130, y), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: cannot write the novelty histogram")
