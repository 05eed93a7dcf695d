"""Training data on disk: discovery of an ImageFolder layout (+ manifest.csv), group-aware seeded splits,
provenance hash and split selection. No torch here (the torch Dataset is train.data.dataset).

Layouts understood (design.md): DIR/{train,val,test}/{class}/*.png|jpg, or DIR/{class}/* without splits
(split 7:2:1 by `split_samples`), optional DIR/manifest.csv (path,split,label,group,background) whose
group column keeps all shots of one item in one split, optional DIR/masks/<same relative path>.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_runtime.errors import ImageError
from edge_runtime.names import CLASS_NAMES
from edge_runtime.preprocess import list_images, read_image
from train.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.7, 0.2, 0.1)


@dataclass(frozen=True)
class Sample:
    """One image: path relative to the data root, class index, group (item) id and split."""

    path: str
    label: int
    group: str
    split: str


@dataclass(frozen=True)
class DataIndex:
    """All samples of a data folder and the class names (index order)."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    assigned: tuple[str, ...] = ()  # paths that had no split and were given one by split_samples

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]

    def split_note(self) -> str:
        """One line on the images that came without a split ('' when every image had one)."""
        if not self.assigned:
            return ""
        chosen = set(self.assigned)
        counts = [sum(1 for s in self.samples if s.path in chosen and s.split == n) for n in SPLITS]
        per = " / ".join(f"{n} {c}" for n, c in zip(SPLITS, counts))
        return f"split: {len(chosen)} of {len(self.samples)} images had no split; assigned by group ({per})"


def _class_order(names: set[str]) -> tuple[str, ...]:
    """CLASS_NAMES order when the folder uses those names (index 1 = counterfeit), else sorted."""
    if names <= set(CLASS_NAMES) and len(names) == len(CLASS_NAMES):
        return tuple(CLASS_NAMES)
    return tuple(sorted(names))


def _default_group(rel: str) -> str:
    """Item id of a file without a manifest: the stem without a trailing shot number ("item7_2" -> "item7")."""
    return re.sub(r"[_-]\d+$", "", Path(rel).stem)


def index_folder(root: str | Path, seed: int = 0, ratios: Sequence[float] = DEFAULT_RATIOS) -> DataIndex:
    """Find the samples of a data folder (see the module docstring). Images without a split (no split
    folder, an empty split cell) are split among themselves by `split_samples(seed, ratios)`; given
    splits are kept. DataIndex.assigned lists the images that got one.

    Raises DataError for a missing folder, no images, fewer than two classes, a split name other than
    train/val/test (naming the manifest line or the folder), or a group with and without a split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    manifest = root / "manifest.csv"
    rows: list[tuple[str, str, str, str]] = []  # (rel path, class name, group, split or "")
    if manifest.is_file():
        with manifest.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise DataError(f"{manifest}: needs at least the columns path,label")
            for line, row in enumerate(reader, start=2):
                rel = row["path"]
                split = (row.get("split") or "").strip()
                if split and split not in SPLITS:
                    raise DataError(f"{manifest} line {line}: split {split!r} is not one of {', '.join(SPLITS)} "
                                    "(leave it empty to have it assigned)")
                rows.append((rel, row["label"], row.get("group") or _default_group(rel), split))
        missing = [r[0] for r in rows if not (root / r[0]).is_file()]
        if missing:
            raise DataError(f"{root / missing[0]}: listed in manifest.csv but missing ({len(missing)} missing)")
    else:
        for path in list_images(root):
            rel = path.relative_to(root)
            parts = rel.parts
            if parts[0] == "masks":
                continue
            if len(parts) == 3 and parts[0] not in SPLITS:
                raise DataError(f"{root / parts[0]}: folder {parts[0]!r} is not a split ({', '.join(SPLITS)}); "
                                f"rename it or move its class folders up to {root}")
            if len(parts) == 3:
                rows.append((rel.as_posix(), parts[1], _default_group(rel.as_posix()), parts[0]))
            elif len(parts) == 2:
                rows.append((rel.as_posix(), parts[0], _default_group(rel.as_posix()), ""))
    if not rows:
        raise DataError(f"{root}: no images found (expected {root}/[split/]class/*.png|jpg)")
    classes = _class_order({r[1] for r in rows})
    if len(classes) < 2:
        raise DataError(f"{root}: only one class ({classes[0]}); need at least two")
    samples = [Sample(rel, classes.index(name), group, split) for rel, name, group, split in rows]
    given = [s for s in samples if s.split]
    unsplit = [s for s in samples if not s.split]
    if unsplit:  # split among themselves only: the given splits (a held-out test set) stay as they are
        _check_groups_unsplit(given, unsplit, manifest if manifest.is_file() else root)
        samples = given + split_samples(unsplit, seed, ratios)
    return DataIndex(root, classes, tuple(sorted(samples, key=lambda s: s.path)),
                     tuple(sorted(s.path for s in unsplit)))


def _check_groups_unsplit(given: Sequence[Sample], unsplit: Sequence[Sample], where: Path) -> None:
    """A group (item) with a split on some rows and none on others would be dealt across splits: refuse."""
    split_of = {s.group: s.split for s in given}
    for s in unsplit:
        if s.group in split_of:
            raise DataError(f"{where}: group {s.group!r} has split {split_of[s.group]!r} on some rows and none on "
                            f"{s.path}; give all shots of one item the same split")


def split_samples(samples: Sequence[Sample], seed: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> list[Sample]:
    """Group-aware seeded split: every group (item) goes whole to one split; per class the groups are
    shuffled and dealt until each split holds its share of images. Existing splits are ignored."""
    if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise DataError(f"split ratios must be three non-negative numbers summing to 1, got {tuple(ratios)}")
    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for label in sorted({s.label for s in samples}):
        groups: dict[str, list[Sample]] = {}
        for s in sorted((s for s in samples if s.label == label), key=lambda s: s.path):
            groups.setdefault(s.group, []).append(s)
        names = sorted(groups)
        rng.shuffle(names)
        total = sum(len(g) for g in groups.values())
        targets = [r * total for r in ratios]
        filled = [0, 0, 0]
        for name in names:
            # the split furthest below its target (relative) takes the next group; val/test get one first
            need = [(targets[i] - filled[i]) / max(targets[i], 1e-9) if targets[i] > 0 else -1e9 for i in range(3)]
            i = int(np.argmax(need))
            filled[i] += len(groups[name])
            out.extend(Sample(s.path, s.label, s.group, SPLITS[i]) for s in groups[name])
    return out


def data_hash(root: Path, samples: Sequence[Sample]) -> str:
    """sha256 over the relative paths, labels, splits and bytes of the samples' files (provenance)."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.path):
        h.update(f"{s.path}\0{s.label}\0{s.split}\0".encode())
        h.update(hashlib.sha256((root / s.path).read_bytes()).digest())
    return h.hexdigest()


def select_split(data: str | Path, split: str, classes: Sequence[str], seed: int = 0) -> tuple[DataIndex, list[Sample]]:
    """Index `data` and take one split ("all" for every image), checking its classes are `classes` (a
    checkpoint's, in order). Raises ConfigError for an unknown split, DataError for a mismatch or no images."""
    if split not in SPLITS + ("all",):
        raise ConfigError(f"--split must be one of {', '.join(SPLITS + ('all',))}, got {split!r}")
    index = index_folder(data, seed=seed)
    if list(index.classes) != list(classes):
        raise DataError(f"{data}: classes {list(index.classes)} differ from the checkpoint's {list(classes)}")
    samples = list(index.samples) if split == "all" else index.split(split)
    if not samples:
        raise DataError(f"{data}: no images in split {split!r}")
    return index, samples


def check_readable(root: Path, samples: Sequence[Sample]) -> None:
    """Fail early with DataError naming the first unreadable image (before any training time is spent)."""
    for s in samples:
        try:
            read_image(root / s.path)
        except ImageError as exc:
            raise DataError(str(exc)) from None
