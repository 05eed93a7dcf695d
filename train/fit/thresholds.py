"""Decision thresholds fitted on the val split, and what they do on a labelled set.

The scanner decides on P(counterfeit) with edge_runtime.roi.Thresholds: p <= genuine_at -> genuine,
p >= counterfeit_at -> counterfeit, in between -> uncertain (the abstain band). `fit_thresholds` sets

- genuine_at from a target counterfeit recall r: at most floor((1 - r) * n) of the n val counterfeits may
  score <= genuine_at. With fewer than 1 / (1 - r) val counterfeits (fewer than 100 for r = 0.99) that
  allows no miss, so genuine_at lies below the lowest counterfeit score;
- counterfeit_at from a target precision q: the lowest threshold whose calls (p >= counterfeit_at) on val
  are counterfeits at least a fraction q of the time.

How, so that the thresholds hold with a few dozen val images:

1. In log-odds. Inside the interval of thresholds that give the same val outcome, each threshold sits at
   its middle in logit space, z = ln(p / (1 - p)), with scores beyond +-LOGIT_LIMIT taken at the limit:
   between p = 1e-4 and 5e-3 that is 7e-4, far from both in the units a model's (or INT8's) logit error
   comes in, where the middle in probability (2.5e-3) sits next to the upper score.
2. Bagged over val resamples. The fit is repeated on N_RESAMPLES bootstrap resamples of val (seeded,
   class-stratified, by group -- physical item -- when the groups are known) and each threshold is the
   mean of the resamples' log-odds. The mean, not the median: genuine_at hinges on the lowest val
   counterfeit, which is in 63% of the resamples, so the median of the resamples is the val-only fit
   again; the mean weighs in the next-lowest ones (bagging, which is what damps an unstable statistic).
   So the bagged genuine_at may sit above a lone low val counterfeit that the val-only fit kept out; the
   val metrics and the recall claim then count it as missed.
   Cross-fitting over train + val groups (scores out of fold for every image) would see more images but
   needs one extra training per fold; the bootstrap reuses the one model's val scores at no training cost.
3. Clamps, then a minimum band. genuine_at <= 0.5 <= counterfeit_at (a fitted band never calls an item
   against its argmax class), neither beyond +-LOGIT_LIMIT (p 1e-4 / 0.9999); then counterfeit_at -
   genuine_at is at least MIN_BAND_LOGIT in log-odds (a narrower band is widened about its centre), so a
   band is never 0.488 / 0.500 and an item needs a logit shift of MIN_BAND_LOGIT to go from one call to
   the other.
4. Said honestly. The fit record holds the one-sided 95% Clopper-Pearson lower bound on counterfeit recall
   from the val counterfeits not called genuine (train.fit.threshold_stats.recall_claim: 16 of 16 gives
   0.829; a 0.99 target needs 299 with no miss), and the expected coverage, error among decided items and
   counterfeit recall with 95% intervals: at the fitted thresholds over the val resamples, and out of bag
   (each resample's own fit scored on the val items it left out, the estimate for unseen items).

A side that the val split cannot inform (no val counterfeits for genuine_at; no counterfeits or no genuine
items for counterfeit_at) keeps Thresholds()' default (0.3 / 0.7), and the fit records per side what
happened: "fitted", "widened" (moved by the minimum band), "clamped" (moved by 0.5 or the limit),
"unreachable" (no threshold meets the target on val; the strictest one is used) or "default".

Pure numpy; the training run calls it on the best checkpoint's val probabilities (train.fit.steps.finish).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edge_runtime.roi import Thresholds
from train.fit.threshold_stats import recall_claim, resample_indices, summarise

DEFAULT_TARGET_RECALL = 0.99  # counterfeit recall genuine_at is fitted for
DEFAULT_TARGET_PRECISION = 0.95  # precision of counterfeit calls counterfeit_at is fitted for
# |log-odds| of a threshold (and of a score, for the middles) at most this: p 1e-4 / 0.9999. The scanner
# compares float32 probabilities, spaced 6e-8 near 1: 0.9999 is 1,700 steps from 1, 1 - 1e-7 would be 2.
LOGIT_LIMIT = math.log(9999.0)
MIN_BAND_LOGIT = 2.0  # counterfeit_at - genuine_at in log-odds at least this (measured: docs/results/thresholds.md)
N_RESAMPLES = 200  # bootstrap resamples of val the fit is bagged over
GENUINE, COUNTERFEIT, UNCERTAIN = 0, 1, -1  # codes of `decisions`


def logit(p) -> np.ndarray:
    """P -> log-odds ln(p / (1 - p)), float64, clipped to [-LOGIT_LIMIT, LOGIT_LIMIT] (p 0 and 1 included)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.clip(np.log(p) - np.log1p(-p), -LOGIT_LIMIT, LOGIT_LIMIT)


def sigmoid(z: float) -> float:
    """Log-odds -> probability; sigmoid(0) is 0.5 exactly."""
    return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class ThresholdFit:
    """Fitted thresholds and how they came about.

    genuine_method / counterfeit_method: "fitted" | "widened" | "clamped" | "unreachable" | "default".
    allowed_misses: val counterfeits the recall target lets fall at or below genuine_at.
    val: decision_metrics on the val split at the fitted thresholds ({} without val data).
    genuine_logit / counterfeit_logit: the thresholds in log-odds. val_only: the thresholds one fit on all
    of val gives (no resampling), for comparison. resampling: {"n", "by" ("group" | "item"), "seed",
    "aggregate", "genuine_logit", "counterfeit_logit"}, the last two summarising the resamples' fitted
    log-odds before clamps and band (threshold_stats.summarise).
    expected: {"at_thresholds", "out_of_bag"}, each {"coverage", "error_decided", "counterfeit_recall"} as
    summarise dicts (None where no resample informs it). recall_claim: threshold_stats.recall_claim on val.
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
    genuine_logit: float = 0.0
    counterfeit_logit: float = 0.0
    min_band_logit: float = MIN_BAND_LOGIT
    logit_limit: float = LOGIT_LIMIT
    val_only: dict = dataclasses.field(default_factory=dict)
    resampling: dict = dataclasses.field(default_factory=dict)
    expected: dict = dataclasses.field(default_factory=dict)
    recall_claim: dict = dataclasses.field(default_factory=dict)

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


def _logit1(p: float) -> float:
    """logit() of one probability, in plain floats (the fit calls it a few hundred times)."""
    if p <= 0.0 or p >= 1.0:
        return -LOGIT_LIMIT if p <= 0.0 else LOGIT_LIMIT
    return min(max(math.log(p) - math.log1p(-p), -LOGIT_LIMIT), LOGIT_LIMIT)


def _middle(low: float, high: float) -> float:
    """The middle of two scores in log-odds (each clipped to the limit)."""
    return 0.5 * (_logit1(low) + _logit1(high))


def _fit_genuine(cf: np.ndarray, all_scores: np.ndarray, allowed: int) -> tuple[float, str]:
    """(log-odds, method): the largest-margin genuine_at that leaves at most `allowed` of the counterfeit
    scores `cf` at or below it."""
    s = np.sort(cf)
    if allowed >= len(s):  # the target lets every counterfeit go: as lenient as the range allows
        return 0.0, "fitted"
    upper = float(s[allowed])  # genuine_at must stay below this score (ties included)
    if upper <= 0.0:
        return -LOGIT_LIMIT, "unreachable"  # a counterfeit at p = 0 exactly: nothing below it
    below = all_scores[all_scores < upper]
    return _middle(float(below.max()) if below.size else 0.0, upper), "fitted"


def _fit_counterfeit(is_cf: np.ndarray, p: np.ndarray, target: float) -> tuple[float, str]:
    """(log-odds, method): the largest-margin counterfeit_at, below the lowest val score whose calls
    p >= score reach precision `target`."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], is_cf[order]
    tp = np.cumsum(ys)
    calls = np.arange(1, len(ps) + 1)
    # a threshold at a score includes every tied item: evaluate only at the last index of each tie run
    last = np.append(ps[1:] != ps[:-1], True)
    ok = last & (tp >= target * calls - 1e-12)
    if not ok.any():
        return LOGIT_LIMIT, "unreachable"
    i = int(np.flatnonzero(ok)[-1])  # the lowest such threshold
    return _middle(float(ps[i + 1]) if i + 1 < len(ps) else 0.0, float(ps[i])), "fitted"


def _fit_once(y: np.ndarray, p: np.ndarray, target_recall: float, target_precision: float) -> tuple:
    """((genuine log-odds, method), (counterfeit log-odds, method)) on one sample; (None, "default") for a side
    it cannot inform."""
    n_cf, n_gen = int(y.sum()), int((~y).sum())
    allowed = int(math.floor((1.0 - target_recall) * n_cf + 1e-9))
    g = _fit_genuine(p[y], p, allowed) if n_cf else (None, "default")
    c = _fit_counterfeit(y, p, target_precision) if n_cf and n_gen else (None, "default")
    return g, c


def settle(genuine_logit: float, counterfeit_logit: float,
           min_band: float = MIN_BAND_LOGIT) -> tuple[float, float, str, str]:
    """Both thresholds in log-odds -> (genuine, counterfeit, what moved genuine, what moved counterfeit).

    genuine is clamped into [-LOGIT_LIMIT, 0] and counterfeit into [0, LOGIT_LIMIT] (p 0.5 is log-odds 0);
    then a band narrower than `min_band` is widened to it about its centre, which keeps both clamps (the
    centre of such a band lies within min_band / 2 of 0). "What moved" is "" (nothing),
    "clamped" or "widened" (the band moved it, clamped before or not)."""
    g = min(max(genuine_logit, -LOGIT_LIMIT), 0.0)
    c = min(max(counterfeit_logit, 0.0), LOGIT_LIMIT)
    moved_g = "clamped" if g != genuine_logit else ""
    moved_c = "clamped" if c != counterfeit_logit else ""
    if c - g < min_band:
        centre, half = 0.5 * (g + c), 0.5 * min_band
        g, c, moved_g, moved_c = centre - half, centre + half, "widened", "widened"
    return g, c, moved_g, moved_c


def _settled(g: tuple, c: tuple, min_band: float) -> tuple[Thresholds, float, float, str, str]:
    """The thresholds of one fit's (log-odds, method) sides, defaults in place of uninformed sides; both
    sides uninformed -> Thresholds() untouched."""
    default = Thresholds()
    if g[0] is None and c[0] is None:
        return default, float(logit(default.genuine_at)), float(logit(default.counterfeit_at)), "default", "default"
    gz = float(logit(default.genuine_at)) if g[0] is None else g[0]
    cz = float(logit(default.counterfeit_at)) if c[0] is None else c[0]
    gz, cz, moved_g, moved_c = settle(gz, cz, min_band)
    # a default side the band left alone keeps its value exactly (not sigmoid(logit(0.3)))
    at_g = default.genuine_at if g[0] is None and not moved_g else sigmoid(gz)
    at_c = default.counterfeit_at if c[0] is None and not moved_c else sigmoid(cz)
    return Thresholds(genuine_at=at_g, counterfeit_at=at_c), gz, cz, moved_g or g[1], moved_c or c[1]


def _metric_summaries(rows: list[dict]) -> dict:
    return {k: summarise([r.get(k) for r in rows]) for k in ("coverage", "error_decided", "counterfeit_recall")}


def expected_at(is_counterfeit: np.ndarray, p_counterfeit: np.ndarray, thresholds: Thresholds,
                groups: Sequence[str] | None = None, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """Coverage, error among decided items and counterfeit recall of fixed `thresholds` over `n_resamples`
    bootstrap resamples of a labelled set (by group when `groups` is given): {"coverage", "error_decided",
    "counterfeit_recall"}, each threshold_stats.summarise's {"mean", "low", "high", "n"} or None.
    is_counterfeit: [N] bool; p_counterfeit: [N] float; groups: [N] str or None."""
    y = np.asarray(is_counterfeit).astype(bool).reshape(-1)
    p = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    rows = [decision_metrics(y[i], p[i], thresholds) for i in resample_indices(y, groups, n_resamples, seed) if len(i)]
    return _metric_summaries(rows)


def fit_thresholds(
    is_counterfeit: np.ndarray,
    p_counterfeit: np.ndarray,
    target_recall: float = DEFAULT_TARGET_RECALL,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    groups: Sequence[str] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    min_band_logit: float = MIN_BAND_LOGIT,
) -> ThresholdFit:
    """Fit genuine_at and counterfeit_at on val scores (see the module docstring).

    is_counterfeit: [N] bool (or 0/1) true labels; p_counterfeit: [N] float P(counterfeit) in [0, 1];
    groups: [N] str item ids (resamples draw whole groups) or None (by image); n_resamples 0: one fit on all
    of val, no bagging; min_band_logit: the band's least width in log-odds (benchmarks/threshold_fit.py
    sweeps it). Empty input or a missing class keeps the default for the side it cannot inform.
    """
    check_targets(target_recall, target_precision)
    y = np.asarray(is_counterfeit).astype(bool).reshape(-1)
    p = np.asarray(p_counterfeit, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in length")
    if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("scores must be probabilities in [0, 1]")
    if n_resamples < 0:
        raise ValueError(f"n_resamples must be >= 0, got {n_resamples}")
    if not 0.0 <= min_band_logit <= LOGIT_LIMIT:
        raise ValueError(f"min_band_logit must be in [0, {LOGIT_LIMIT:.2f}], got {min_band_logit}")
    n_cf, n_gen = int(y.sum()), int((~y).sum())
    allowed = int(math.floor((1.0 - target_recall) * n_cf + 1e-9))
    g_all, c_all = _fit_once(y, p, target_recall, target_precision)
    val_only = _settled(g_all, c_all, min_band_logit)[0]
    g_z: list[float] = []
    c_z: list[float] = []
    oob_rows: list[dict] = []
    seen = np.zeros(len(y), dtype=bool)
    for idx in resample_indices(y, groups, n_resamples if p.size else 0, seed):
        g, c = _fit_once(y[idx], p[idx], target_recall, target_precision)
        if g[0] is not None:
            g_z.append(g[0])
        if c[0] is not None:
            c_z.append(c[0])
        seen[:] = False
        seen[idx] = True
        if (~seen).any():
            oob_rows.append(decision_metrics(y[~seen], p[~seen], _settled(g, c, min_band_logit)[0]))
    # bagging: each informed side is the mean of its resamples' log-odds (methods from the fit on all of val)
    g_bag = (float(np.mean(g_z)), g_all[1]) if g_z else g_all
    c_bag = (float(np.mean(c_z)), c_all[1]) if c_z else c_all
    thresholds, gz, cz, g_method, c_method = _settled(g_bag, c_bag, min_band_logit)
    val = decision_metrics(y, p, thresholds) if p.size else {}
    resampling = {"n": int(n_resamples) if p.size else 0, "by": "item" if groups is None else "group",
                  "seed": int(seed), "aggregate": "mean log-odds", "genuine_logit": summarise(g_z),
                  "counterfeit_logit": summarise(c_z)}
    expected = {"at_thresholds": expected_at(y, p, thresholds, groups, resampling["n"], seed),
                "out_of_bag": _metric_summaries(oob_rows)}
    claim = recall_claim(n_cf, n_cf - int(val.get("counterfeit_missed", 0)), float(target_recall))
    return ThresholdFit(thresholds, float(target_recall), float(target_precision), n_gen, n_cf, allowed,
                        g_method, c_method, val, gz, cz, float(min_band_logit), LOGIT_LIMIT,
                        dataclasses.asdict(val_only), resampling, expected, claim)


def span(s: dict | None) -> str:
    """'91.2% [80.0, 100.0]' from a threshold_stats.summarise dict of fractions ('-' for None)."""
    if not s:
        return "-"
    return f"{100 * s['mean']:.1f}% [{100 * s['low']:.1f}, {100 * s['high']:.1f}]"


def describe_fit(fit: dict | None) -> list[str]:
    """Lines for a terminal on a fit record (ThresholdFit.to_dict, as best.pt and the manifest keep it):
    the expected coverage and error among decided items with 95% intervals (out of bag, then at the
    thresholds over val resamples) and the recall claim. Records from before these fields give no lines."""
    if not fit:
        return []
    lines = []
    expected, rs = fit.get("expected") or {}, fit.get("resampling") or {}
    for key, what in (("out_of_bag", "expected on unseen items (each resample's fit on the val items it left out)"),
                      ("at_thresholds", "at these thresholds over val resamples")):
        e = expected.get(key)
        if e:
            lines.append(f"{what}, {rs.get('n')} resamples by {rs.get('by')}: coverage {span(e.get('coverage'))}, "
                         f"error on decided {span(e.get('error_decided'))}, counterfeit recall "
                         f"{span(e.get('counterfeit_recall'))}")
    if fit.get("recall_claim"):
        lines.append(f"recall claim (val): {fit['recall_claim']['text']}")
    return lines
