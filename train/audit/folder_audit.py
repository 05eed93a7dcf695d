"""`mgfen-data audit`: what a data folder teaches before any model is trained.

    report = audit_folder(Path("data"), probe_sizes=(128, 384), folds=5, seed=0)
    report["verdict"]   # [{"level": "WARNING" | "NOTE" | "OK" | "BAR", "text": ...}]

Counts per split and class, groups (and any that span splits or classes), per-class file metadata,
near-duplicates (pHash), shortcut baselines (metadata, colour statistics) and the frozen linear probe, each
scored by group cross-validation over all images with 95% group-bootstrap intervals, and a verdict.
The report is a JSON-ready dict; train/audit/render.py renders it.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge_runtime.preprocess import PreprocessConfig
from train.audit.baselines import (DEFAULT_BATCH, best_baseline, column_aucs, cross_validated_scores,
                                   default_baselines, extract_features, family_pvalues, score_baselines)
from train.audit.image_meta import meta_matrix
from train.audit.image_stats import COLOUR_COLUMNS, DUPLICATE_DISTANCE, near_duplicate_pairs
from train.audit.resolution import resolution_report, resolution_verdict
from train.data.folders import SPLITS, DataIndex, index_folder
from train.errors import DataError
from train.evaluate.resample import DEFAULT_FOLDS, N_BOOT, N_PERM

SHORTCUT_AUC = 0.75  # a shortcut family beyond chance at or above this AUC is a WARNING (below: a NOTE)
ALPHA = 0.05  # permutation p-value below which a shortcut family counts as beyond chance
SHORTCUT_FAMILIES = ("metadata", "colour")
FEW_GROUPS = 30  # below this many groups the intervals are wide enough to say so
MAX_PAIRS_LISTED = 200  # duplicate pairs kept per kind in the report (all are counted)
TELLING_GAP = 0.15  # a column is named in the verdict when its own AUC is this far from 0.5


def _declared_splits(root: Path) -> bool:
    """True when the folder fixes its own splits (split folders or a manifest split column)."""
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as fh:
            if any((row.get("split") or "") in SPLITS for row in csv.DictReader(fh)):
                return True
    return any((root / s).is_dir() for s in SPLITS)


def _summary(values: Sequence[float]) -> dict | None:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if len(v) == 0:
        return None
    return {"min": float(v.min()), "median": float(np.median(v)), "max": float(v.max())}


def _class_metadata(metas: list, labels: np.ndarray, classes: Sequence[str]) -> dict:
    out = {}
    for c, name in enumerate(classes):
        ms = [m for m, y in zip(metas, labels) if y == c]
        out[name] = {
            "n": len(ms),
            "width": _summary([m.width for m in ms]), "height": _summary([m.height for m in ms]),
            "aspect": _summary([m.aspect for m in ms]), "bytes_per_pixel": _summary([m.bytes_per_pixel for m in ms]),
            "jpeg_quality": _summary([m.jpeg_quality for m in ms]),
            "formats": dict(Counter(m.format for m in ms).most_common()),
            "jpeg_standard_tables": sum(bool(m.jpeg_standard_tables) for m in ms),
            "subsampling": dict(Counter(m.subsampling for m in ms if m.subsampling).most_common()),
            "cameras": dict(Counter(m.camera or "none" for m in ms).most_common()),
        }
    return out


def _groups(index: DataIndex) -> dict:
    splits, labels = {}, {}
    for s in index.samples:
        splits.setdefault(s.group, set()).add(s.split)
        labels.setdefault(s.group, set()).add(s.label)
    per_class = Counter(min(v) for v in labels.values())
    return {
        "n": len(splits),
        "per_class": {index.classes[c]: per_class.get(c, 0) for c in range(len(index.classes))},
        "spanning_splits": [{"group": g, "splits": sorted(v)} for g, v in sorted(splits.items()) if len(v) > 1],
        "mixed_labels": [{"group": g, "labels": [index.classes[c] for c in sorted(v)]}
                         for g, v in sorted(labels.items()) if len(v) > 1],
    }


def _duplicates(index: DataIndex, hashes: np.ndarray, max_distance: int) -> dict:
    kinds: dict[str, list] = {"cross_split": [], "within_split": [], "same_group": []}
    for i, j, d in near_duplicate_pairs(hashes, max_distance):
        a, b = index.samples[i], index.samples[j]
        kind = "cross_split" if a.split != b.split else ("same_group" if a.group == b.group else "within_split")
        kinds[kind].append({"a": a.path, "b": b.path, "distance": d, "splits": [a.split, b.split],
                            "labels": [index.classes[a.label], index.classes[b.label]]})
    out: dict = {"max_distance": max_distance}
    for kind, pairs in kinds.items():
        out[f"{kind}_count"] = len(pairs)
        out[kind] = pairs[:MAX_PAIRS_LISTED]
    conflicts = [p for ps in kinds.values() for p in ps if p["labels"][0] != p["labels"][1]]
    out["label_conflicts_count"] = len(conflicts)
    out["label_conflicts"] = conflicts[:MAX_PAIRS_LISTED]
    return out


def audit_folder(root: str | Path, probe_sizes: Sequence[int] = (), folds: int = DEFAULT_FOLDS, seed: int = 0,
                 n_boot: int = N_BOOT, n_perm: int = N_PERM, hash_distance: int = DUPLICATE_DISTANCE, device: str = "cpu",
                 batch: int = DEFAULT_BATCH, progress: Callable[[int], None] | None = None,
                 on_start: Callable[[int], None] | None = None, preprocess: PreprocessConfig | None = None) -> dict:
    """Audit a data folder (any layout train.data.folders.index_folder reads). Returns the report dict.

    probe_sizes: linear-probe input sides (() for none); folds, seed: group cross-validation (seed also
    splits a folder without splits, as mgfen-train does); n_boot: bootstrap replicates; n_perm: label
    permutations testing each shortcut family (0: fall back to the interval's lower bound); hash_distance:
    pHash Hamming distance for near-duplicates; on_start(n_images) and progress(n_done) report progress;
    preprocess: the frame the photos' pixel size is checked against (train.audit.resolution), None to skip.
    Raises DataError for folders that are missing, empty, single-class, unreadable or not two-class."""
    t0 = time.perf_counter()
    root = Path(root)
    index = index_folder(root, seed=seed)
    if len(index.classes) != 2:
        raise DataError(f"{root}: the audit needs exactly two classes, found {len(index.classes)} ({', '.join(index.classes)})")
    if folds < 2:
        raise DataError(f"--folds must be at least 2, got {folds}")
    samples = index.samples
    for k, name in enumerate(index.classes):
        n = sum(1 for s in samples if s.label == k)
        if n < 2:
            raise DataError(f"{root}: class {name} has {n} image; the audit needs at least two per class")
    if on_start is not None:
        on_start(len(samples))
    feats = extract_features(root, [s.path for s in samples], probe_sizes, device, batch, progress=progress)
    labels = np.array([s.label for s in samples], np.int64)
    groups = [s.group for s in samples]
    group_info = _groups(index)
    cv_groups = "group"
    if min(len({g for g, y in zip(groups, labels) if y == c}) for c in (0, 1)) < 2:
        cv_groups, groups = "image", [s.path for s in samples]  # too few groups to hold one out: per image
    specs = default_baselines(probe_sizes)
    scores = cross_validated_scores(feats, labels, groups, specs, folds, seed)
    rows = score_baselines(specs, labels, scores, groups, n_boot, seed)
    shortcuts = [b for b in specs if b.family in SHORTCUT_FAMILIES]
    pvalues = family_pvalues(feats, labels, groups, shortcuts, folds, seed, n_perm) if n_perm > 0 else {}
    counts = {sp: {c: sum(1 for s in samples if s.split == sp and s.label == k) for k, c in enumerate(index.classes)}
              for sp in SPLITS if any(s.split == sp for s in samples)}
    report = {
        "root": str(root), "classes": list(index.classes), "positive_class": index.classes[1],
        "n_images": len(samples), "splits_declared": _declared_splits(root), "counts": counts,
        "groups": {**group_info, "cv_unit": cv_groups},
        "metadata": _class_metadata(feats.meta, labels, index.classes),
        "duplicates": _duplicates(index, feats.hashes, hash_distance),
        "baselines": rows,
        "permutation_p": pvalues,
        "resolution": None if preprocess is None else resolution_report(
            [(m.width, m.height) for m in feats.meta], preprocess.frame_size, preprocess.global_size, preprocess.crop_size),
        "telling_columns": {"metadata": column_aucs(*meta_matrix(feats.meta), labels)[:3],
                            "colour": column_aucs(feats.colour, COLOUR_COLUMNS, labels)[:3]},
        "images": [{"path": s.path, "split": s.split, "label": index.classes[s.label], "group": s.group,
                    **m.to_dict(), "brightness": float(c[COLOUR_COLUMNS.index("brightness")]), "phash": h.tobytes().hex()}
                   for s, m, c, h in zip(samples, feats.meta, feats.colour, feats.hashes)],
        "settings": {"probe_sizes": list(probe_sizes), "folds": folds, "seed": seed, "n_boot": n_boot, "n_perm": n_perm,
                     "hash_distance": hash_distance, "device": device, "batch": batch},
    }
    report["verdict"] = verdict(report)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _fmt(row: dict) -> str:
    ci = row["roc_auc_ci"]
    auc = f"AUC {row['roc_auc']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    return f"{auc}, accuracy {100 * row['accuracy']:.1f}%"


def _telling(report: dict, family: str) -> str:
    names = report["classes"]
    parts = []
    for t in report["telling_columns"][family]:
        if abs(t["auc"] - 0.5) < TELLING_GAP:
            continue
        m0, m1 = (f"{m:.3g}" for m in t["medians"])
        parts.append(f"{t['column']} {names[0]} {m0} vs {names[1]} {m1}" if m0 != m1
                     else f"{t['column']} AUC {t['auc']:.2f} (equal medians {m0})")
    return "; ".join(parts)


_VERBS = {"metadata": ("predicts", "does not predict"), "colour": ("predict", "do not predict")}
_SHORTCUT_CAUSE = {"metadata": "size/format/JPEG settings differ between classes: shoot and save both classes "
                               "the same way, or the model can learn the file instead of the item",
                   "colour": "lighting, background or white balance differ between classes: shoot both classes "
                             "in the same place and light"}


def verdict(report: dict) -> list[dict]:
    """Lines a field team can act on: leaks (duplicates across splits, groups across splits or classes),
    each shortcut family that predicts the label, the probe, and the bar a trained model must clear."""
    out: list[dict] = []
    dup, grp, rows = report["duplicates"], report["groups"], report["baselines"]
    if dup["cross_split_count"]:
        shown = "; ".join(f"{p['a']} ~ {p['b']} (distance {p['distance']})" for p in dup["cross_split"][:5])
        out.append({"level": "WARNING", "text": f"{dup['cross_split_count']} near-duplicate pair(s) across splits "
                    f"leak test images into training: {shown}"})
    if dup["label_conflicts_count"]:
        p = dup["label_conflicts"][0]
        out.append({"level": "WARNING", "text": f"{dup['label_conflicts_count']} near-duplicate pair(s) carry different "
                    f"labels, e.g. {p['a']} ({p['labels'][0]}) ~ {p['b']} ({p['labels'][1]})"})
    if dup["within_split_count"]:
        out.append({"level": "NOTE", "text": f"{dup['within_split_count']} near-duplicate pair(s) of different groups "
                    f"within a split: group them as one item (manifest.csv group column)"})
    if grp["spanning_splits"]:
        g = grp["spanning_splits"][0]
        out.append({"level": "WARNING", "text": f"{len(grp['spanning_splits'])} group(s) span two splits, e.g. "
                    f"{g['group']} in {', '.join(g['splits'])}: photos of one item must stay in one split"})
    if grp["mixed_labels"]:
        out.append({"level": "WARNING", "text": f"{len(grp['mixed_labels'])} group(s) hold both classes, e.g. "
                    f"{grp['mixed_labels'][0]['group']}: check the manifest's group column or file names"})
    if grp["cv_unit"] == "image":
        out.append({"level": "WARNING", "text": "a class has fewer than two groups: cross-validated per image, "
                    "optimistic if items were photographed more than once (add a group column to manifest.csv)"})
    for family in SHORTCUT_FAMILIES:
        best = best_baseline(rows, family)
        if best is None:
            continue
        p = report["permutation_p"].get(family)
        if p is not None:
            beyond, evidence = p < ALPHA, f"; permutation p {p:.3f}"
        else:  # no permutation test run: the bootstrap interval's lower bound decides
            beyond, evidence = bool(best["roc_auc_ci"]) and best["roc_auc_ci"][0] > 0.5, ""
        what, (does, does_not) = best["description"].split(",")[0], _VERBS[family]
        if beyond:
            level = "WARNING" if best["roc_auc"] >= SHORTCUT_AUC else "NOTE"
            telling = _telling(report, family)
            out.append({"level": level, "text": f"{what} alone {does} the label ({_fmt(best)}{evidence}): "
                        f"{_SHORTCUT_CAUSE[family]}" + (f" ({telling})" if telling else "")})
        else:
            out.append({"level": "OK", "text": f"{what} {does_not} the label beyond chance ({_fmt(best)}{evidence})"})
    probe = best_baseline(rows, "probe")
    if probe is not None:
        out.append({"level": "NOTE", "text": f"generic ImageNet features ({probe['description']}) reach "
                    f"{_fmt(probe)} with no training of the backbone"})
    best = best_baseline(rows)
    if best is not None:
        out.append({"level": "BAR", "text": f"a trained model must beat AUC {best['roc_auc']:.3f} "
                    f"({best['description']}; {_fmt(best)}) on these images to show it learned more than this"})
    if report.get("resolution"):
        out += resolution_verdict(report["resolution"])
    if grp["n"] < FEW_GROUPS:
        out.append({"level": "NOTE", "text": f"only {grp['n']} group(s) (items): every interval here is wide; "
                    "more items narrow them, more shots of the same item do not"})
    return out
