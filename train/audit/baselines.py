"""Shortcut and linear-probe baselines: per-image features read in one pass, the baseline definitions,
and fitting/scoring them by group cross-validation or on fixed splits.

    feats = extract_features(root, [s.path for s in samples], probe_sizes=(128, 384))
    specs = default_baselines(feats.probe_sizes)
    oof = cross_validated_scores(feats, labels, groups, specs, folds=5, seed=0)   # {name: [N] P(class 1)}
    p = fit_predict(specs[0], feats.subset(train_idx), labels[train_idx], feats.subset(test_idx))
    rows = score_baselines(specs, labels, oof, groups, seed=0)                    # list of dicts with intervals

Feature sets: "metadata" (image_meta.META_COLUMNS), "colour" (image_stats.COLOUR_COLUMNS), "probe<S>"
(FrozenProbe features at side S). Labels are ints in {0, 1}; scores are P(class 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge_runtime.errors import ImageError
from edge_runtime.preprocess import decode_image
from train.audit.classifiers import make_classifier
from train.audit.image_meta import ImageMeta, meta_matrix, read_meta
from train.audit.image_stats import COLOUR_COLUMNS, HASH_BITS, colour_stats, phash
from train.errors import DataError
from train.evaluate.resample import (N_BOOT, N_PERM, cross_val_predict, permutation_pvalue, score_with_interval,
                                     weighted_auc)

FAMILIES = {"metadata": "image metadata", "colour": "global colour statistics", "probe": "frozen ImageNet linear probe"}
MODELS = {"logistic": "logistic regression", "1nn": "1-nearest-neighbour"}
DEFAULT_BATCH = 16


@dataclass
class ImageFeatures:
    """Everything the baselines and the audit need per image, in `paths` order.

    meta: ImageMeta per image; colour: [N, 11] float64; hashes: [N, 32] uint8 packed pHash; probe: {size: [N, 1280]
    float64} (empty without a probe)."""

    paths: list[str]
    meta: list[ImageMeta]
    colour: np.ndarray
    hashes: np.ndarray
    probe: dict[int, np.ndarray]

    @property
    def probe_sizes(self) -> tuple[int, ...]:
        return tuple(self.probe)

    def matrix(self, features: str) -> np.ndarray:
        """[N, F] float64 matrix of a feature set: "metadata", "colour" or "probe<S>"."""
        if features == "metadata":
            return meta_matrix(self.meta)[0]
        if features == "colour":
            return self.colour
        if features.startswith("probe") and features[5:].isdigit() and int(features[5:]) in self.probe:
            return self.probe[int(features[5:])]
        raise ValueError(f"unknown feature set {features!r} (have metadata, colour, "
                         f"{', '.join(f'probe{s}' for s in self.probe) or 'no probe'})")

    def subset(self, index: Sequence[int] | np.ndarray) -> "ImageFeatures":
        """The features of the images at `index` (int positions), in that order."""
        idx = np.asarray(index, np.int64)
        return ImageFeatures([self.paths[i] for i in idx], [self.meta[i] for i in idx], self.colour[idx],
                             self.hashes[idx], {s: f[idx] for s, f in self.probe.items()})


def _read(root: Path, rel: str) -> tuple[bytes, np.ndarray]:
    path = root / rel
    try:
        data = path.read_bytes()
        return data, decode_image(data, str(path))
    except ImageError as exc:
        raise DataError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None


def extract_features(root: str | Path, paths: Sequence[str], probe_sizes: Sequence[int] = (),
                     device: str = "cpu", batch: int = DEFAULT_BATCH, pretrained: str = "auto",
                     progress: Callable[[int], None] | None = None) -> ImageFeatures:
    """Read every image once (in batches of `batch`) and compute metadata, colour statistics, pHash and,
    for each probe size, frozen probe features. Nothing is cached on disk.

    root: data folder; paths: relative paths; progress: called with the number of images just done.
    Raises DataError naming the first unreadable image."""
    from train.audit.probe import FrozenProbe

    root = Path(root)
    probe = FrozenProbe(probe_sizes, device, pretrained) if probe_sizes else None
    metas, colours, hashes = [], [], []
    feats: dict[int, list[np.ndarray]] = {s: [] for s in probe_sizes}
    for start in range(0, len(paths), batch):
        frames = []
        for rel in paths[start:start + batch]:
            data, bgr = _read(root, rel)
            metas.append(read_meta(data, bgr.shape))
            colours.append(colour_stats(bgr))
            hashes.append(phash(bgr))
            if probe is not None:
                frames.append(probe.frame(bgr))
        if probe is not None:
            for size, f in probe.encode(np.stack(frames)).items():
                feats[size].append(f)
        if progress is not None:
            progress(len(paths[start:start + batch]))
    return ImageFeatures(list(paths), metas, np.asarray(colours, np.float64).reshape(-1, len(COLOUR_COLUMNS)),
                         np.asarray(hashes, np.uint8).reshape(len(metas), HASH_BITS // 8),
                         {s: np.concatenate(v) for s, v in feats.items() if v})


@dataclass(frozen=True)
class Baseline:
    """One baseline: a feature set ("metadata", "colour", "probe<S>") and a classifier ("logistic", "1nn")."""

    features: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.features}/{self.model}"

    @property
    def family(self) -> str:
        return "probe" if self.features.startswith("probe") else self.features

    @property
    def description(self) -> str:
        size = f" at {self.features[5:]} px" if self.family == "probe" else ""
        return f"{FAMILIES[self.family]}{size}, {MODELS[self.model]}"


def default_baselines(probe_sizes: Sequence[int]) -> list[Baseline]:
    """Metadata and colour statistics with logistic regression and 1-NN; the probe at each size with
    logistic regression."""
    specs = [Baseline(f, m) for f in ("metadata", "colour") for m in ("logistic", "1nn")]
    return specs + [Baseline(f"probe{s}", "logistic") for s in probe_sizes]


def fit_predict(baseline: Baseline, train: ImageFeatures, train_labels: np.ndarray, test: ImageFeatures) -> np.ndarray:
    """Fit `baseline` on the train images and return P(class 1) [M] float64 for the test images."""
    model = make_classifier(baseline.model)
    return model.fit(train.matrix(baseline.features), np.asarray(train_labels)).predict_proba(test.matrix(baseline.features))


def cross_validated_scores(feats: ImageFeatures, labels: np.ndarray, groups: Sequence[str],
                           baselines: Sequence[Baseline], folds: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Out-of-fold P(class 1) [N] per baseline name, all baselines on the same group folds."""
    return {b.name: cross_val_predict(partial(make_classifier, b.model), feats.matrix(b.features),
                                      np.asarray(labels), groups, folds, seed) for b in baselines}


def score_baselines(baselines: Sequence[Baseline], labels: np.ndarray, scores: dict[str, np.ndarray],
                    groups: Sequence[str], n_boot: int = N_BOOT, seed: int = 0) -> list[dict]:
    """One dict per baseline: name, features, model, family, description, and the Score fields
    (accuracy, roc_auc, their 95% group-bootstrap intervals, n, groups)."""
    return [{"name": b.name, "features": b.features, "model": b.model, "family": b.family,
             "description": b.description,
             **score_with_interval(labels, scores[b.name], groups, n_boot, seed).to_dict()} for b in baselines]


def family_pvalues(feats: ImageFeatures, labels: np.ndarray, groups: Sequence[str], baselines: Sequence[Baseline],
                   folds: int, seed: int = 0, n_perm: int = N_PERM) -> dict[str, float]:
    """{family: permutation p-value} of each feature family among `baselines`: the statistic is the best
    out-of-fold ROC-AUC over the family's baselines, so choosing the better classifier is part of the null."""
    out = {}
    for family in dict.fromkeys(b.family for b in baselines):
        members = [(partial(make_classifier, b.model), feats.matrix(b.features)) for b in baselines if b.family == family]

        def statistic(y: np.ndarray) -> float:
            ones = np.ones(len(y))
            return max(float(weighted_auc(y, cross_val_predict(make, x, y, groups, folds, seed), ones))
                       for make, x in members)

        out[family] = permutation_pvalue(statistic, labels, groups, n_perm, seed)[1]
    return out


def best_baseline(rows: Sequence[dict], family: str | None = None) -> dict | None:
    """The row with the highest ROC-AUC (optionally within one family); None if no row has an AUC."""
    rows = [r for r in rows if r.get("roc_auc") is not None and (family is None or r["family"] == family)]
    return max(rows, key=lambda r: r["roc_auc"]) if rows else None


def column_aucs(x: np.ndarray, names: Sequence[str], labels: np.ndarray) -> list[dict]:
    """Per column of [N, F] x: ROC-AUC of the raw value for class 1 and the per-class medians, sorted by
    how far the AUC is from 0.5 (most telling first). Describes, fits nothing."""
    labels = np.asarray(labels)
    ones = np.ones(len(labels))
    rows = []
    for j, name in enumerate(names):
        auc = float(weighted_auc(labels, x[:, j], ones))
        rows.append({"column": name, "auc": auc,
                     "medians": [float(np.median(x[labels == c, j])) for c in (0, 1)]})
    return sorted(rows, key=lambda r: -abs(r["auc"] - 0.5))
