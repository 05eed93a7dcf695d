"""Decision thresholds fitted on the val split, and what they do on a labelled set.

The scanner decides on P(counterfeit) with edge_runtime.roi.Thresholds: p <= genuine_at -> genuine,
p >= counterfeit_at -> counterfeit, in between -> uncertain (the abstain band). `fit_thresholds` sets

- genuine_at from a target counterfeit recall r: at most floor((1 - r) * n) of the n val counterfeits may
  score <= genuine_at. With fewer than 1 / (1 - r) val counterfeits (fewer than 100 for r = 0.99) that
  allows no miss, so genuine_at lies below the lowest counterfeit score;
- counterfeit_at from a target precision q: the lowest threshold whose calls (p >= counterfeit_at) on val
  are counterfeits at least a fraction q of the time.

Inside the interval of thresholds that give the same val outcome, each threshold sits at its middle (the
largest margin to the val scores on both sides). Then genuine_at is clamped into GENUINE_RANGE and
counterfeit_at into COUNTERFEIT_RANGE, which keeps genuine_at <= 0.5 <= counterfeit_at: a fitted band never
calls an item against its argmax class. A side that the val split cannot inform (no val counterfeits for
genuine_at; no counterfeits or no genuine items for counterfeit_at) keeps Thresholds()' default (0.3 / 0.7),
and the fit records which of these happened per side: "fitted", "clamped", "unreachable" (no threshold
meets the target on val; the strictest one is used) or "default".

Pure numpy; the training run calls it on the best checkpoint's val probabilities (train.fit.trainer).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from edge_runtime.roi import Thresholds

DEFAULT_TARGET_RECALL = 0.99  # counterfeit recall genuine_at is fitted for
DEFAULT_TARGET_PRECISION = 0.95  # precision of counterfeit calls counterfeit_at is fitted for
GENUINE_RANGE = (0.0, 0.5)  # genuine_at is clamped into this range
COUNTERFEIT_RANGE = (0.5, 1.0)  # counterfeit_at is clamped into this range

GENUINE, COUNTERFEIT, UNCERTAIN = 0, 1, -1  # codes of `decisions`


@dataclass(frozen=True)
class ThresholdFit:
    """Fitted thresholds and how they came about.

    genuine_method / counterfeit_method: "fitted" | "clamped" | "unreachable" | "default".
    allowed_misses: val counterfeits the recall target lets fall at or below genuine_at.
    val: decision_metrics on the val split at the fitted thresholds ({} without val data).
    """

    thresholds: Thresholds
    target_recall: float
    target_precision: float
    n_genuine: int
    n_counterfeit: int
    allowed_misses: int
    genuine_method: str
    counterfeit_method: str
    val: dict

    def to_dict(self) -> dict:
        """JSON-able dict (the checkpoint's "threshold_fit" and the report's "thresholds")."""
        d = dataclasses.asdict(self)
        d["thresholds"] = dataclasses.asdict(self.thresholds)
        return d


def check_targets(target_recall: float, target_precision: float) -> None:
    """ValueError unless both targets lie in (0, 1]."""
    for name, value in (("target recall", target_recall), ("target precision", target_precision)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {value}")


def decisions(p_counterfeit: np.ndarray, thresholds: Thresholds) -> np.ndarray:
    """[N] float P(counterfeit) -> [N] int8 decisions: COUNTERFEIT (1), GENUINE (0) or UNCERTAIN (-1),
    exactly Thresholds.decide element-wise (counterfeit_at is tested first)."""
    p = np.asarray(p_counterfeit, dtype=np.float64)
    out = np.full(p.shape, UNCERTAIN, dtype=np.int8)
    out[p <= thresholds.genuine_at] = GENUINE
    out[p >= thresholds.counterfeit_at] = COUNTERFEIT
    return out


def decision_metrics(is_counterfeit: np.ndarray, p_counterfeit: np.ndarray, thresholds: Thresholds) -> dict:
    """What `thresholds` do on a labelled set.

    is_counterfeit: [N] bool; p_counterfeit: [N] float. Returns n, decided, errors (wrong calls), coverage (decided / n),
    accuracy_decided (correct calls / decided; None when nothing is decided), error_decided, counterfeit
    recall (counterfeits called counterfeit / counterfeits), counterfeit_missed (counterfeits called
    genuine), precision of counterfeit calls, uncertain counts per class; fractions in [0, 1] or None.
    """
    y = np.asarray(is_counterfeit, dtype=bool)
    d = decisions(p_counterfeit, thresholds)
    n, decided = int(len(y)), int((d != UNCERTAIN).sum())
    correct = int(((d == COUNTERFEIT) & y).sum() + ((d == GENUINE) & ~y).sum())
    n_cf, calls = int(y.sum()), int((d == COUNTERFEIT).sum())
    tp = int(((d == COUNTERFEIT) & y).sum())

    def frac(a: int, b: int) -> float | None:
        return a / b if b else None

    return {
        "genuine_at": thresholds.genuine_at,
        "counterfeit_at": thresholds.counterfeit_at,
        "n": n,
        "decided": decided,
        "errors": decided - correct,
        "coverage": frac(decided, n),
        "accuracy_decided": frac(correct, decided),
        "error_decided": frac(decided - correct, decided),
        "counterfeit_recall": frac(tp, n_cf),
        "counterfeit_missed": int(((d == GENUINE) & y).sum()),
        "counterfeit_precision": frac(tp, calls),
        "uncertain_genuine": int(((d == UNCERTAIN) & ~y).sum()),
        "uncertain_counterfeit": int(((d == UNCERTAIN) & y).sum()),
    }


def _midpoint(low: float, high: float) -> float:
    return 0.5 * (low + high)


def _fit_genuine_at(cf: np.ndarray, all_scores: np.ndarray, allowed: int) -> tuple[float, str]:
    """Largest-margin genuine_at that leaves at most `allowed` of the counterfeit scores `cf` at or below it."""
    s = np.sort(cf)
    if allowed >= len(s):  # the target lets every counterfeit go: as lenient as the range allows
        return GENUINE_RANGE[1], "fitted"
    upper = float(s[allowed])  # genuine_at must stay below this score (ties included)
    if upper <= 0.0:
        return 0.0, "unreachable"  # a counterfeit at p = 0 exactly: nothing below it
    below = all_scores[all_scores < upper]
    lower = float(below.max()) if below.size else 0.0
    return _midpoint(lower, upper), "fitted"


def _fit_counterfeit_at(is_cf: np.ndarray, p: np.ndarray, target: float) -> tuple[float, str]:
    """Largest-margin counterfeit_at: the lowest val score whose calls p >= score reach precision `target`."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], is_cf[order]
    tp = np.cumsum(ys)
    calls = np.arange(1, len(ps) + 1)
    # a threshold at a score includes every tied item: evaluate only at the last index of each tie run
    last = np.r_[ps[1:] != ps[:-1], True]
    ok = last & (tp >= target * calls - 1e-12)
    if not ok.any():
        return COUNTERFEIT_RANGE[1], "unreachable"
    i = int(np.flatnonzero(ok)[-1])  # the lowest such threshold
    at = float(ps[i])
    lower = float(ps[i + 1]) if i + 1 < len(ps) else 0.0
    return _midpoint(lower, at), "fitted"


def _clamp(value: float, method: str, bounds: tuple[float, float]) -> tuple[float, str]:
    clamped = min(max(value, bounds[0]), bounds[1])
    return clamped, ("clamped" if method == "fitted" and clamped != value else method)


def fit_thresholds(
    is_counterfeit: np.ndarray,
    p_counterfeit: np.ndarray,
    target_recall: float = DEFAULT_TARGET_RECALL,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> ThresholdFit:
    """Fit genuine_at and counterfeit_at on val scores (see the module docstring).

    is_counterfeit: [N] bool (or 0/1) true labels; p_counterfeit: [N] float P(counterfeit) in [0, 1].
    Empty input or a missing class keeps the default for the side it cannot inform.
    """
    check_targets(target_recall, target_precision)
    y = np.asarray(is_counterfeit).astype(bool).reshape(-1)
    p = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in length")
    if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("scores must be probabilities in [0, 1]")
    default = Thresholds()
    n_cf, n_gen = int(y.sum()), int((~y).sum())
    allowed = int(math.floor((1.0 - target_recall) * n_cf + 1e-9))
    if n_cf:
        genuine_at, g_method = _clamp(*_fit_genuine_at(p[y], p, allowed), GENUINE_RANGE)
    else:
        genuine_at, g_method = default.genuine_at, "default"
    if n_cf and n_gen:
        counterfeit_at, c_method = _clamp(*_fit_counterfeit_at(y, p, target_precision), COUNTERFEIT_RANGE)
    else:
        counterfeit_at, c_method = default.counterfeit_at, "default"
    thresholds = Thresholds(genuine_at=genuine_at, counterfeit_at=counterfeit_at)
    val = decision_metrics(y, p, thresholds) if p.size else {}
    return ThresholdFit(thresholds, float(target_recall), float(target_precision), n_gen, n_cf, allowed,
                        g_method, c_method, val)
