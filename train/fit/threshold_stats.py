"""Small statistics for the decision thresholds (train.fit.thresholds): the one-sided Clopper-Pearson lower
bound on counterfeit recall and what it lets a report claim, seeded class-stratified bootstrap resamples of
a labelled set (by group when groups are known), and the mean / percentile interval of a bootstrap sample.

    lower = recall_lower_bound(16, 16)                  # 0.8293: 16 of 16 caught
    claim = recall_claim(16, 16, target=0.99)           # {"lower_bound": 0.829..., "target_claimable": False, ...}
    for idx in resample_indices(labels, groups, 200, seed=0): ...   # [M] int64 indices into the set

Pure python and numpy (no scipy): the beta quantile behind Clopper-Pearson is found by bisection on the
binomial tail, which is exact for integer counts.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np

CLAIM_LEVEL = 0.95  # confidence of the recall claim (one-sided)
INTERVAL_LEVEL = 0.95  # coverage of the bootstrap percentile intervals in the fit record
_BISECT_STEPS = 60  # halvings of [0, 1]: far below float64 resolution of a recall


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (exact up to float64 rounding)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
            for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def recall_lower_bound(n: int, k: int, level: float = CLAIM_LEVEL) -> float:
    """One-sided Clopper-Pearson lower bound on a proportion: k successes of n trials -> the p at which
    P(X >= k) = 1 - level (the (1 - level) quantile of Beta(k, n - k + 1)); 0 when k = 0, and
    (1 - level) ** (1 / n) when k = n. ValueError unless 0 <= k <= n, n >= 1 and 0 < level < 1."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k {k}, n {n}")
    if k == 0:
        return 0.0
    alpha = 1.0 - level
    if k == n:
        return alpha ** (1.0 / n)
    lo, hi = 0.0, 1.0  # binomial_tail(k, n, p) rises with p
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if binomial_tail(k, n, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def counterfeits_needed(target: float, level: float = CLAIM_LEVEL) -> int | None:
    """The fewest counterfeits, all caught, whose lower bound reaches `target`: ceil(ln(1 - level) / ln target)
    (299 for 0.99 at 95%); None for a target of 1 (no finite sample claims it)."""
    if target >= 1.0:
        return None
    if target <= 0.0:
        return 1
    n = max(1, math.ceil(math.log(1.0 - level) / math.log(target) - 1e-12))
    return n if recall_lower_bound(n, n, level) >= target else n + 1


def recall_claim(n: int, caught: int, target: float, level: float = CLAIM_LEVEL) -> dict:
    """What n labelled counterfeits, `caught` of them not called genuine, let one claim about counterfeit
    recall: {"n", "caught", "level", "lower_bound", "target", "target_claimable", "needed_for_target", "text"}.
    lower_bound is None (and the claim empty) without counterfeits."""
    needed = counterfeits_needed(target, level)
    lower = recall_lower_bound(n, caught, level) if n else None
    claimable = lower is not None and lower >= target
    if lower is None:
        text = "no counterfeits: nothing can be claimed about counterfeit recall"
    else:
        text = (f"counterfeit recall >= {100 * lower:.1f}% with {100 * level:.0f}% confidence from {n} counterfeits "
                f"({caught} not called genuine)")
        if not claimable:
            text += (f"; the {target:g} target needs >= {needed} counterfeits with none called genuine"
                     if needed is not None else f"; the {target:g} target cannot be claimed from any sample")
    return {"n": int(n), "caught": int(caught), "level": level, "lower_bound": lower, "target": target,
            "target_claimable": bool(claimable), "needed_for_target": needed, "text": text}


def resample_indices(labels: np.ndarray, groups: Sequence[str] | None, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """`n_boot` bootstrap resamples of a labelled set, each as [M] int64 indices into it (M varies with
    group sizes). Stratified: per class (a group's class is its majority label) as many groups are drawn,
    with replacement, as that class has; every image of a drawn group comes along each time it is drawn.
    groups None: every image is its own group. Seeded (numpy default_rng), so deterministic."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    names = np.arange(len(y)).astype(str) if groups is None else np.asarray(groups, dtype=str)
    if names.shape != y.shape:
        raise ValueError(f"groups {names.shape} and labels {y.shape} differ in length")
    _, gid = np.unique(names, return_inverse=True)
    n_groups = int(gid.max()) + 1 if len(y) else 0
    size = np.bincount(gid, minlength=n_groups)
    order = np.argsort(gid, kind="stable")  # the images of group g: order[start[g] : start[g] + size[g]]
    start = np.cumsum(size) - size
    votes = np.zeros((n_groups, int(y.max()) + 1 if len(y) else 1), np.int64)
    np.add.at(votes, (gid, y), 1)
    major = votes.argmax(1)
    strata = [np.flatnonzero(major == c) for c in np.unique(major)]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        picked = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata] or [np.zeros(0, np.int64)])
        lengths = size[picked]
        offset = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        yield order[np.repeat(start[picked], lengths) + offset]


def summarise(values: Sequence[float | None], level: float = INTERVAL_LEVEL) -> dict | None:
    """{"mean", "low", "high", "n"}: the mean and the central `level` percentile interval of the finite
    values (None entries, e.g. an error rate with nothing decided, are left out); None when none is left."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    a = (1.0 - level) / 2
    return {"mean": float(v.mean()), "low": float(np.quantile(v, a)), "high": float(np.quantile(v, 1.0 - a)),
            "n": int(len(v))}
