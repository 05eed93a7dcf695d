"""Novelty score: how unlike the training set a frame is, from the global graph's pooled features.

    table = fit_novelty(train_feats, val_feats, target_rate=DEFAULT_TARGET_RATE)   # at the end of training
    save_table(table, bundle / names.NOVELTY_FILE)                                  # export
    table = load_table(bundle / names.NOVELTY_FILE)                                 # the scanner
    score = table.score(features)            # features [D] or [N,D] float -> float / [N] float64
    table.is_unknown(score)                  # score > threshold

The score is the squared Mahalanobis distance of the L2-normalised features to the train split's mean,
divided by D (about 1 for an in-domain frame), with a Ledoit-Wolf shrunk covariance. Normalised, because
the direction of the pooled features is what tells items apart: a flat or noise frame gives a pooled
vector of a tenth of the usual norm, which raw Euclidean or Mahalanobis geometry puts near the mean
(measured on the synthetic tags: raw scores refused none of them, normalised ones all). The covariance:
with a few hundred train images and D in the hundreds or thousands the sample covariance is singular, and
shrinking it towards a scaled identity makes it invertible with the shrinkage estimated from the data
(training sets no floor on it; fit_novelty's min_shrinkage is for measuring others). The table keeps the shrunk
covariance's inverse in its exact low-rank form (Woodbury): base * I minus the sample covariance's r =
min(N-1, D) principal directions with their weights, so a frame costs r * D multiply-adds (and the
table r * D floats), not D * D. The threshold is the val
scores' (1 - target_rate) quantile, so about target_rate of in-domain frames are refused. When val is
too small for that quantile (fewer than 1 / target_rate images) it is the same quantile of held-out
train scores (K-fold: each fold scored by a fit on the others), because scores of the very images a
fit saw are far too low when N is small against D; the folds go by item when training passes the train
images' groups, since a fit that saw another shot of the same item scores it too low as well. numpy
only: the scanner computes it on the device.

Precision and cost: the fit runs in float64; the table keeps mean and components float32 (as stored),
and a frame's r projections are float32 dot products, the rest float64. Against the float64 path the
scores differ by at most 8e-6 of the threshold (benchmarks/bench_novelty.py, precision table), far inside the
INT8 gate's NOVELTY_TOLERANCE (calibration.verdict_gate, 0.1 of the threshold). One vector is
projected single-threaded (project_vector): numpy's matrix-vector product hands a large table to
OpenBLAS's threads, whose start-up and competition with onnxruntime's cost more than the product on a
busy CPU (bench_novelty times both); batches [N,D] use the matrix product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.errors import BundleError

DEFAULT_TARGET_RATE = 0.02  # in-domain frames the threshold refuses (false refusal); mgfen-train --novelty-rate
MAX_TARGET_RATE = 0.5  # a threshold refusing more than half of the scanner's own items is no threshold
UNKNOWN = "unknown"  # the fourth answer: not what this scanner was trained on
FOLDS = 5
MIN_FIT = 2  # fewest images a fit needs


def vecdot_projection(comps: np.ndarray, z: np.ndarray) -> np.ndarray:
    """comps [r,D] float32, z [D] float32 -> [r] float32: one BLAS dot per row (numpy >= 2)."""
    return np.vecdot(comps, z)


def einsum_projection(comps: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The same without np.vecdot (numpy 1.x, as on every Jetson): numpy's own loop, about 3x slower."""
    return np.einsum("kd,d->k", comps, z)


# neither starts BLAS threads: the whole process's BLAS settings stay as they are
project_vector = vecdot_projection if hasattr(np, "vecdot") else einsum_projection


@dataclass(frozen=True)
class NoveltyTable:
    """mean [D] float32 of the unit-norm train features; components [r,D] float32, C-contiguous
    (orthonormal rows: principal directions of the train covariance); weights [r] float64 and base: the
    inverse of the shrunk covariance is base * I - components.T @ diag(weights) @ components; threshold
    on the score; target_rate; shrinkage in [0,1]; source of the threshold ("val" | "train-heldout");
    n_train / n_calib: images fitted on / images the threshold came from. Arrays of any float dtype are
    cast on construction (older tables and checkpoints hold float64)."""

    mean: np.ndarray
    components: np.ndarray
    weights: np.ndarray
    base: float
    threshold: float
    target_rate: float
    shrinkage: float
    source: str
    n_train: int
    n_calib: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", np.ascontiguousarray(self.mean, dtype=np.float32))
        object.__setattr__(self, "components", np.ascontiguousarray(self.components, dtype=np.float32))
        object.__setattr__(self, "weights", np.asarray(self.weights, dtype=np.float64))

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def score(self, features: np.ndarray):
        """features [D] or [N,D] (any float dtype) -> score float (for [D]) or [N] float64."""
        x = np.asarray(features)
        if x.ndim == 1:
            z = unit_rows(x) - self.mean  # [D] float64
            proj = project_vector(self.components, z.astype(np.float32))  # [r] float32
            return float((self.base * (z @ z) - np.square(proj, dtype=np.float64) @ self.weights) / self.dim)
        return mahalanobis(unit_rows(x.reshape(-1, self.dim)), self.mean, self.components, self.weights, self.base)

    def is_unknown(self, score: float) -> bool:
        return bool(score > self.threshold)

    def to_dict(self) -> dict:
        """The table's scalars (for reports and checkpoints' summaries; not the arrays)."""
        return {"threshold": self.threshold, "target_rate": self.target_rate, "shrinkage": self.shrinkage,
                "source": self.source, "n_train": self.n_train, "n_calib": self.n_calib, "dim": self.dim,
                "rank": int(self.components.shape[0])}


def unit_rows(x: np.ndarray) -> np.ndarray:
    """[N,D] or [D] float -> float64 rows scaled to unit L2 norm (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def mahalanobis(x: np.ndarray, mean: np.ndarray, comps: np.ndarray, weights: np.ndarray,
                base: float) -> np.ndarray:
    """[N,D] -> [N] squared Mahalanobis distance / D under the low-rank precision, in the widest of the
    arrays' dtypes (float64 for float64 x; NoveltyTable.score's one-frame path projects in float32)."""
    z = x - mean
    proj = z @ comps.T  # [N,r]
    return (base * np.einsum("nd,nd->n", z, z) - (proj * proj) @ weights) / x.shape[1]


def shrunk_components(x: np.ndarray,
                      min_shrinkage: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """x [N,D] float -> (mean [D], components [r,D], weights [r], base, shrinkage) of the inverse of the
    Ledoit-Wolf (2004) shrunk covariance (1 - a) S + a mu I (S: sample covariance, mu its mean
    eigenvalue, a estimated from the data, raised to min_shrinkage when below it), from the SVD of the
    centred x (no D x D matrix)."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    mean = x.mean(0)
    xc = x - mean
    _, sing, comps = np.linalg.svd(xc, full_matrices=False)
    lam = sing * sing / n  # eigenvalues of S (the rest are 0)
    mu = float(lam.sum()) / d
    cov_norm2 = float(np.sum(lam * lam))
    delta2 = (cov_norm2 - mu * mu * d) / d  # ||S - mu I||_F^2 / d
    # sum_k ||x_k x_k^T - S||_F^2 = sum_k ||x_k||^4 - n ||S||_F^2
    beta2 = (float(np.sum(np.sum(xc * xc, 1) ** 2)) / n - cov_norm2) / (n * d)
    shrink = 1.0 if delta2 <= 0 else min(max(beta2 / delta2, 0.0), 1.0)
    shrink = max(shrink, min_shrinkage)
    floor = max(shrink * mu, 1e-9 * max(mu, 1e-12))  # an unshrunk rank-deficient S keeps a floor
    base = 1.0 / floor
    weights = base - 1.0 / ((1.0 - shrink) * lam + floor)
    return mean, comps, weights, base, shrink


def threshold_at(scores: np.ndarray, target_rate: float) -> float:
    """The (1 - target_rate) quantile of [N] calibration scores: the threshold fit_novelty sets."""
    return float(np.quantile(np.asarray(scores, dtype=np.float64), 1.0 - target_rate))


def fold_of(n: int, folds: int, groups: Sequence[str] | None = None) -> np.ndarray:
    """[n] int fold of each row: index % folds, or with `groups` (one per row) the group's rank among the
    sorted distinct groups % folds, so every group's rows share a fold. `folds` is clipped to [2, n] (to
    the number of groups with groups; a single group falls back to index folds)."""
    if groups is not None and len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} feature rows")
    names = sorted(set(() if groups is None else groups))
    if len(names) < 2:
        return np.arange(n) % max(2, min(folds, n))
    rank = {g: i for i, g in enumerate(names)}
    return np.array([rank[g] for g in groups]) % max(2, min(folds, len(names)))


def heldout_scores(x: np.ndarray, folds: int = FOLDS, groups: Sequence[str] | None = None,
                   min_shrinkage: float = 0.0) -> np.ndarray:
    """x [N,D] -> [N] float64 scores of each image under a fit on the other folds (fold_of: by index, or
    by group so no image is scored by a fit that saw another shot of its item)."""
    n = x.shape[0]
    idx = fold_of(n, folds, groups)
    folds = int(idx.max()) + 1
    out = np.empty(n, np.float64)
    for f in range(folds):
        out[idx == f] = mahalanobis(x[idx == f], *shrunk_components(x[idx != f], min_shrinkage)[:4])
    return out


def check_rate(target_rate: float) -> None:
    """ValueError (one line) unless 0 < target_rate < MAX_TARGET_RATE."""
    if not 0.0 < target_rate < MAX_TARGET_RATE:
        raise ValueError(f"novelty target rate must be in (0, {MAX_TARGET_RATE:g}), a fraction of in-domain frames "
                         f"(0.02 = 2%); got {target_rate:g}")


def fit_novelty(train_feats: np.ndarray, val_feats: np.ndarray | None,
                target_rate: float = DEFAULT_TARGET_RATE, train_groups: Sequence[str] | None = None,
                min_shrinkage: float = 0.0) -> NoveltyTable:
    """train_feats [N,D], val_feats [M,D] or None (pooled global features, float) -> NoveltyTable.
    train_groups: the item of each train row, so held-out train scores come from folds by item (fold_of).
    min_shrinkage: the covariance shrinkage's floor (shrunk_components; 0: Ledoit-Wolf's estimate alone,
    training's choice; benchmarks/novelty_threshold.py --min-shrinkage measures others).
    ValueError for fewer than MIN_FIT train images or a bad rate."""
    check_rate(target_rate)
    x = np.asarray(train_feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < MIN_FIT:
        raise ValueError(f"novelty fit needs at least {MIN_FIT} train feature rows, got shape {x.shape}")
    x = unit_rows(x)
    mean, comps, weights, base, shrink = shrunk_components(x, min_shrinkage)
    v = None if val_feats is None else unit_rows(np.asarray(val_feats, dtype=np.float64).reshape(-1, x.shape[1]))
    if v is not None and v.shape[0] >= math.ceil(1.0 / target_rate):
        scores, source = mahalanobis(v, mean, comps, weights, base), "val"
    else:
        scores, source = heldout_scores(x, groups=train_groups, min_shrinkage=min_shrinkage), "train-heldout"
    return NoveltyTable(mean, comps, weights, float(base), threshold_at(scores, target_rate), float(target_rate),
                        float(shrink), source, int(x.shape[0]), int(scores.shape[0]))


ARRAYS = ("mean", "components", "weights")
SCALARS = ("base", "threshold", "target_rate", "shrinkage")


def save_table(table: NoveltyTable, path: str | Path) -> None:
    """Write the table as .npz: the arrays float32, the scalars as 0-d arrays."""
    with open(path, "wb") as fh:
        np.savez(fh, **{k: getattr(table, k).astype(np.float32) for k in ARRAYS},
                 **{k: np.float64(getattr(table, k)) for k in SCALARS}, source=np.array(table.source),
                 n_train=np.int64(table.n_train), n_calib=np.int64(table.n_calib))


def load_table(path: str | Path) -> NoveltyTable:
    """Read a table written by save_table (arrays float32, or float64 in older files: cast by NoveltyTable);
    BundleError (one line) when it is not one."""
    try:
        with np.load(str(path), allow_pickle=False) as z:
            table = NoveltyTable(**{k: np.asarray(z[k]) for k in ARRAYS},
                                 **{k: float(z[k]) for k in SCALARS}, source=str(z["source"]),
                                 n_train=int(z["n_train"]), n_calib=int(z["n_calib"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: not a novelty table ({type(exc).__name__}: {exc})") from None
    d, (r, dc) = table.mean.shape[0], table.components.shape
    if table.mean.ndim != 1 or dc != d or table.weights.shape != (r,) or not math.isfinite(table.threshold):
        raise BundleError(f"{path}: novelty table has mean {table.mean.shape}, components "
                          f"{table.components.shape} and weights {table.weights.shape}")
    return table
