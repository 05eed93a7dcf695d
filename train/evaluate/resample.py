"""Group-aware evaluation: stratified group folds, out-of-fold scores, and accuracy / ROC-AUC with 95%
bootstrap intervals that resample groups (physical items), not images; plus a paired comparison of two
models scored on the same images.

    folds = group_folds(labels, groups, 5, seed=0)                         # [N] fold id per image
    p = cross_val_predict(lambda: make_classifier("logistic"), x, labels, groups, 5, seed=0)
    s = score_with_interval(labels, p, groups, seed=0)                      # Score(accuracy, roc_auc, ...)
    d = paired_difference(labels, p_model, p_baseline, groups, seed=0)      # model minus baseline
    obs, p = permutation_pvalue(statistic, labels, groups, 200, seed=0)     # does anything beat chance?

Scores are P(class 1) in [0, 1]; a score >= 0.5 predicts class 1. The bootstrap intervals hold the fitted
models fixed (they resample the scored images), so on small sets they are narrower than the spread from
refitting; permutation_pvalue refits on group-permuted labels and is the test of "beyond chance".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from train.audit.classifiers import Classifier
from train.errors import DataError

N_BOOT = 1000
DEFAULT_FOLDS = 5
N_PERM = 200
LEVEL = 0.95
THRESHOLD = 0.5  # score at and above which class 1 is predicted
_CHUNK = 250  # bootstrap replicates weighted at a time (memory O(chunk * N))


def _group_ids(groups: Sequence[str]) -> tuple[np.ndarray, int]:
    """[N] group names -> ([N] int64 index into the sorted unique names, number of groups)."""
    names, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return inverse.astype(np.int64), len(names)


def group_folds(labels: np.ndarray, groups: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """[N] int fold id in 0..folds-1 per image; every group lies in exactly one fold.

    Stratified: per class (a group's class is its majority label), groups are shuffled (seeded), taken
    largest first, each dealt to the fold holding the fewest images of that class so far (ties: fewest
    images in all, then the lowest fold id)."""
    labels = np.asarray(labels, np.int64)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    gid, n_groups = _group_ids(groups)
    size = np.bincount(gid, minlength=n_groups)
    votes = np.zeros((n_groups, int(labels.max()) + 1), np.int64)
    np.add.at(votes, (gid, labels), 1)
    major = votes.argmax(1)
    rng = np.random.default_rng(seed)
    fold_of_group = np.empty(n_groups, np.int64)
    per_class = np.zeros((folds, int(major.max()) + 1), np.int64)
    total = np.zeros(folds, np.int64)
    for cls in np.unique(major):
        members = rng.permutation(np.flatnonzero(major == cls))
        for g in members[np.argsort(-size[members], kind="stable")]:
            f = int(np.lexsort((np.arange(folds), total, per_class[:, cls]))[0])
            fold_of_group[g] = f
            per_class[f, cls] += size[g]
            total[f] += size[g]
    return fold_of_group[gid]


def cross_val_predict(make_model: Callable[[], Classifier], x: np.ndarray, labels: np.ndarray,
                      groups: Sequence[str], folds: int, seed: int = 0) -> np.ndarray:
    """Out-of-fold P(class 1) [N] float64: each fold scored by a model fitted on the other folds.

    x: [N, F] features; labels: [N] in {0, 1}. Raises DataError when a class has fewer than two groups
    (some training fold would lack it)."""
    labels = np.asarray(labels, np.int64)
    gid, _ = _group_ids(groups)
    for cls in (0, 1):
        if len(np.unique(gid[labels == cls])) < 2:
            raise DataError(f"class {cls} has fewer than two groups (items): group cross-validation needs two")
    fold = group_folds(labels, groups, folds, seed)
    out = np.empty(len(labels), np.float64)
    for f in np.unique(fold):
        test = fold == f
        out[test] = make_model().fit(x[~test], labels[~test]).predict_proba(x[test])
    return out


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count half) with per-image weights: labels [N] in {0,1}, scores [N], weights [B, N]
    (or [N]) -> [B] (or scalar) float64; NaN where a class has zero weight. One sort serves all rows."""
    w = np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(scores, kind="stable")
    s, y = np.asarray(scores, np.float64)[order], np.asarray(labels)[order].astype(bool)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each distinct score
    ws = w[:, order]
    pos = np.add.reduceat(np.where(y, ws, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(y, 0.0, ws), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(1)
    den = pos.sum(1) * neg.sum(1)
    auc = np.divide(num, den, out=np.full(len(w), np.nan), where=den > 0)
    return auc if np.ndim(weights) == 2 else auc[0]


def weighted_accuracy(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Accuracy of `scores >= THRESHOLD` with per-image weights [B, N] (or [N]) -> [B] (or scalar)."""
    correct = ((np.asarray(scores) >= THRESHOLD) == np.asarray(labels).astype(bool)).astype(np.float64)
    w = np.asarray(weights, np.float64)
    return (w @ correct) / w.sum(-1)


def bootstrap_weights(groups: Sequence[str], n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of [b, N] float64 image weights, n_boot rows in all: each row draws as many groups as there
    are, with replacement (seeded), and weighs every image by how often its group was drawn."""
    gid, n_groups = _group_ids(groups)
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _CHUNK):
        b = min(_CHUNK, n_boot - start)
        draws = rng.integers(0, n_groups, (b, n_groups))
        counts = np.zeros((b, n_groups))
        np.add.at(counts, (np.repeat(np.arange(b), n_groups), draws.ravel()), 1.0)
        yield counts[:, gid]


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return None
    a = (1.0 - level) / 2
    return [float(np.quantile(v, a)), float(np.quantile(v, 1.0 - a))]


@dataclass(frozen=True)
class Score:
    """Accuracy and ROC-AUC (None when one class is absent) of P(class 1) scores with percentile
    bootstrap intervals over groups; n images, groups, n_boot replicates, seed."""

    n: int
    groups: int
    accuracy: float
    accuracy_ci: list[float] | None
    roc_auc: float | None
    roc_auc_ci: list[float] | None
    n_boot: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def score_with_interval(labels: np.ndarray, scores: np.ndarray, groups: Sequence[str], n_boot: int = N_BOOT,
                        seed: int = 0, level: float = LEVEL) -> Score:
    """Accuracy and ROC-AUC of [N] scores against [N] labels in {0, 1}, with `level` intervals from
    `n_boot` group-bootstrap replicates (replicates that lose a class are left out of the AUC interval)."""
    labels, scores = np.asarray(labels, np.int64), np.asarray(scores, np.float64)
    ones = np.ones(len(labels))
    auc = weighted_auc(labels, scores, ones)
    accs, aucs = [], []
    for w in bootstrap_weights(groups, n_boot, seed):
        accs.append(weighted_accuracy(labels, scores, w))
        aucs.append(weighted_auc(labels, scores, w))
    accs_a = np.concatenate(accs) if accs else np.zeros(0)
    aucs_a = np.concatenate(aucs) if aucs else np.zeros(0)
    return Score(len(labels), _group_ids(groups)[1], float(weighted_accuracy(labels, scores, ones)),
                 _interval(accs_a, level), None if np.isnan(auc) else float(auc),
                 None if np.isnan(auc) else _interval(aucs_a, level), n_boot, seed)


def paired_difference(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, groups: Sequence[str],
                      n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """Model A minus model B on the same images: accuracy and ROC-AUC differences, each with a `level`
    group-bootstrap interval (both models weighed by the same replicate) and p_not_better, the share of
    replicates where A does not beat B (a one-sided bootstrap p-value for "A is better")."""
    labels = np.asarray(labels, np.int64)
    ones = np.ones(len(labels))
    out: dict = {"n": len(labels), "groups": _group_ids(groups)[1], "n_boot": n_boot, "seed": seed}
    for metric, fn in (("accuracy", weighted_accuracy), ("roc_auc", weighted_auc)):
        point = fn(labels, scores_a, ones) - fn(labels, scores_b, ones)
        reps = np.concatenate([fn(labels, scores_a, w) - fn(labels, scores_b, w)
                               for w in bootstrap_weights(groups, n_boot, seed)] or [np.zeros(0)])
        finite = reps[np.isfinite(reps)]
        out[metric] = None if np.isnan(point) else float(point)
        out[f"{metric}_ci"] = _interval(reps, level)
        out[f"{metric}_p_not_better"] = float((finite <= 0).mean()) if len(finite) else None
    return out


def permutation_pvalue(statistic: Callable[[np.ndarray], float], labels: np.ndarray, groups: Sequence[str],
                       n_perm: int = N_PERM, seed: int = 0) -> tuple[float, float]:
    """(observed statistic, one-sided p-value) for "the labels carry information the statistic finds".

    statistic: labels [N] -> float (higher = more predictive, e.g. the out-of-fold ROC-AUC of a fresh
    cross-validation). Each of `n_perm` replicates shuffles the labels between groups (a group's images
    keep one shared label, its majority label) and recomputes the statistic; p = (1 + #(null >= observed))
    / (1 + n_perm)."""
    labels = np.asarray(labels, np.int64)
    gid, n_groups = _group_ids(groups)
    votes = np.zeros((n_groups, int(labels.max()) + 1), np.int64)
    np.add.at(votes, (gid, labels), 1)
    group_label = votes.argmax(1)
    observed = float(statistic(labels))
    rng = np.random.default_rng(seed)
    null = np.array([statistic(rng.permutation(group_label)[gid]) for _ in range(n_perm)])
    return observed, float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_perm))
