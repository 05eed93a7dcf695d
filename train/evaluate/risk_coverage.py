"""Risk-coverage of P(counterfeit) scores: error rate on decided items as the abstain band widens.

A symmetric band of half-width w around 0.5 is Thresholds(0.5 - w, 0.5 + w): items with
|p - 0.5| >= w are decided (p >= 0.5 -> counterfeit), the rest abstain. w = 0 decides everything (plain
argmax); as w grows, coverage falls and, for a model whose confident calls are right, so does the error
rate on the decided items. `curve` walks every distinct |p - 0.5| of the set; `table` evaluates a few
fixed bands with train.fit.thresholds.decision_metrics; `draw` writes the picture (OpenCV, no matplotlib).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_runtime.roi import Thresholds
from train.fit.thresholds import decision_metrics

BAND_HALF_WIDTHS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.49)  # rows of the table


def curve(is_counterfeit: np.ndarray, p_counterfeit: np.ndarray) -> dict:
    """The whole risk-coverage curve, widest coverage first.

    is_counterfeit: [N] bool; p_counterfeit: [N] float. Returns lists of equal length: half_width (band
    half-width w; every distinct |p - 0.5|), coverage (decided / N), decided, errors and error (errors /
    decided), plus n. Empty input gives empty lists.
    """
    y = np.asarray(is_counterfeit, dtype=bool).reshape(-1)
    p = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    dist = np.round(np.abs(p - 0.5), 12)  # 0.95 and 0.05 are the same distance from 0.5, float error aside
    wrong = (p >= 0.5) != y
    levels = np.unique(dist)  # ascending: level j decides every item with dist >= levels[j]
    order = np.sort(dist)
    first = np.searchsorted(order, levels, side="left")
    decided = len(p) - first
    wrong_sorted = wrong[np.argsort(dist, kind="stable")]
    errors_from = np.concatenate([np.cumsum(wrong_sorted[::-1])[::-1], [0]])  # errors among items >= index
    errors = errors_from[first]
    return {
        "n": int(len(p)),
        "half_width": [float(w) for w in levels],
        "coverage": [float(d / len(p)) for d in decided],
        "decided": [int(d) for d in decided],
        "errors": [int(e) for e in errors],
        "error": [float(e / d) for e, d in zip(errors, decided)],
    }


def table(is_counterfeit: np.ndarray, p_counterfeit: np.ndarray, half_widths=BAND_HALF_WIDTHS) -> list[dict]:
    """decision_metrics at the symmetric bands Thresholds(0.5 - w, 0.5 + w), one dict per w (key
    "half_width" added)."""
    return [{"half_width": float(w), **decision_metrics(is_counterfeit, p_counterfeit, Thresholds(0.5 - w, 0.5 + w))}
            for w in half_widths]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def format_table(rows: list[dict], fitted: dict | None = None) -> str:
    """Markdown table of `table` rows (and the fitted thresholds' decision_metrics as a last row)."""
    lines = ["| band (genuine_at / counterfeit_at) | coverage % | decided | error on decided % | counterfeit recall % |",
             "|---|---|---|---|---|"]
    for r in rows + ([{**fitted, "label": "checkpoint"}] if fitted else []):
        band = f"{r['genuine_at']:.3f} / {r['counterfeit_at']:.3f}"
        if r.get("label"):
            band = f"**{r['label']}** {band}"
        lines.append(f"| {band} | {_pct(r['coverage'])} | {r['decided']}/{r['n']} | {_pct(r['error_decided'])} "
                     f"({r['errors']}) | {_pct(r['counterfeit_recall'])} |")
    return "\n".join(lines)


def draw(points: dict, path: Path, fitted: dict | None = None, title: str = "", width: int = 640,
         height: int = 440) -> None:
    """PNG of a `curve`: error on decided items (y, %) against coverage (x, %), with the point of `fitted`
    (decision_metrics at the checkpoint's thresholds) marked. Raises OSError when the file cannot be written."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 64, 20, 44, 56
    pw, ph = width - left - right, height - top - bottom
    font = cv2.FONT_HERSHEY_SIMPLEX
    marked = fitted is not None and fitted.get("coverage") is not None and fitted.get("error_decided") is not None
    errs = list(points["error"]) + ([fitted["error_decided"]] if marked else [])
    y_max = max(0.05, max(errs, default=0.0) * 1.1)

    def xy(cov: float, err: float) -> tuple[int, int]:
        return int(round(left + pw * cov)), int(round(top + ph - ph * min(err, y_max) / y_max))

    for i in range(5):
        v = y_max * i / 4
        _, y = xy(0.0, v)
        cv2.line(img, (left, y), (left + pw, y), (225, 225, 225), 1)
        cv2.putText(img, f"{100 * v:.1f}", (6, y + 5), font, 0.42, (80, 80, 80), 1, cv2.LINE_AA)
        x, _ = xy(i / 4, 0.0)
        cv2.putText(img, f"{25 * i}", (x - 10, top + ph + 18), font, 0.42, (80, 80, 80), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), (0, 0, 0), 1)
    cv2.putText(img, "coverage %", (left + pw // 2 - 40, height - 12), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "error on decided %", (left, top - 8), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if title:
        cv2.putText(img, title, (left + 170, top - 8), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    pts = [xy(c, e) for c, e in zip(points["coverage"], points["error"])]
    if pts:
        line = np.array(pts + [(left, pts[-1][1])], np.int32)  # runs out to coverage 0 at the last level
        cv2.polylines(img, [line], False, (180, 119, 31), 2, cv2.LINE_AA)
    if marked:
        c = xy(fitted["coverage"], fitted["error_decided"])
        cv2.circle(img, c, 6, (40, 39, 214), -1, cv2.LINE_AA)
        cv2.putText(img, f"thresholds {fitted['genuine_at']:.2f}/{fitted['counterfeit_at']:.2f}", (c[0] - 60, c[1] - 10),
                    font, 0.42, (40, 39, 214), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: cannot write the risk-coverage picture")
