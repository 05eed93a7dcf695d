"""Training data: discovery of an ImageFolder layout (+ manifest.csv), group-aware seeded splits, and a
torch Dataset that runs exactly the runtime preprocessing (edge_runtime.preprocess).

Layouts understood (design.md): DIR/{train,val,test}/{class}/*.png|jpg, or DIR/{class}/* without splits
(split 7:2:1 by `split_samples`), optional DIR/manifest.csv (path,split,label,group,background) whose
group column keeps all shots of one item in one split, optional DIR/masks/<same relative path>.

One sample -> (image [3,S,S] float32 RGB in [0,1], frame [3,F,F] uint8 RGB, label int64).
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_runtime.errors import ImageError
from edge_runtime.names import CLASS_NAMES
from edge_runtime.preprocess import (PreprocessConfig, global_input, list_images, prepare_frame, read_image,
                                     square_frame)
from train.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
BG_STREAM, AUG_STREAM, N_STREAMS = 0, 1, 2  # FrameDataset._rng: independent random streams per sample
DEFAULT_RATIOS = (0.7, 0.2, 0.1)

# Optional per-sample transform (background replacement): (frame_bgr HxWx3 uint8, mask HxW uint8 or None,
# rng) -> frame_bgr HxWx3 uint8, applied to the source image before prepare_frame.
SampleTransform = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], np.ndarray]


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


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations that keep micro features: exact flips and 90-degree turns, a small rotation
    (bilinear, |angle| <= max_rotation degrees, with probability p_rotate) and a mild gain/offset jitter.
    No blur, no rescaling."""

    flips: bool = True
    rot90: bool = True
    max_rotation: float = 8.0
    p_rotate: float = 0.5
    gain: float = 0.08
    offset: float = 8.0


def augment_frame(
    frame: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, mask: np.ndarray | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """F x F x 3 uint8 RGB -> F x F x 3 uint8 RGB, randomly flipped/turned/rotated/jittered.

    With `mask` (F x F uint8), returns (frame, mask) with the same geometric changes applied to the mask
    (nearest-neighbour rotation); the random draws are the same with or without a mask."""
    out, m = frame, mask
    if cfg.flips and rng.random() < 0.5:
        out = out[:, ::-1]
        m = m[:, ::-1] if m is not None else None
    if cfg.flips and rng.random() < 0.5:
        out = out[::-1]
        m = m[::-1] if m is not None else None
    if cfg.rot90:
        turns = int(rng.integers(4))
        out = np.rot90(out, turns)
        m = np.rot90(m, turns) if m is not None else None
    out = np.ascontiguousarray(out)
    m = np.ascontiguousarray(m) if m is not None else None
    if cfg.max_rotation > 0 and rng.random() < cfg.p_rotate:
        size = out.shape[0]
        rot = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), float(rng.uniform(-cfg.max_rotation, cfg.max_rotation)), 1.0)
        out = cv2.warpAffine(out, rot, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if m is not None:
            m = cv2.warpAffine(m, rot, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
    if cfg.gain > 0 or cfg.offset > 0:
        gain = rng.uniform(1 - cfg.gain, 1 + cfg.gain, 3).astype(np.float32)
        offset = rng.uniform(-cfg.offset, cfg.offset, 3).astype(np.float32)
        out = np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    return out if mask is None else (out, m)


def foreground_target(mask: np.ndarray | None, size: int) -> torch.Tensor:
    """F x F uint8 mask (or None) -> [1, size, size] float32 foreground fraction in [0, 1]; all -1 when
    the sample has no mask (the loss skips it)."""
    if mask is None:
        return torch.full((1, size, size), -1.0)
    small = cv2.resize((mask >= 128).astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small)[None]


class FrameDataset(Dataset):
    """Samples -> (image [3,S,S] float32 in [0,1], frame [3,F,F] uint8 RGB, label int64), and with
    `with_masks` a fourth item: the foreground of the (augmented) frame, foreground_target at S x S.

    Frames are prepared with edge_runtime.preprocess.prepare_frame and cached in memory (F x F x 3 uint8
    each). With a sample transform (background replacement), which must run anew every time, the cache
    holds the source instead: image and mask cropped to the centred square and resized to F x F (what
    prepare_frame would do first), so each epoch skips decoding and works at frame size. Augmentation
    (training) runs on the prepared frame, before the global resize (global_input).
    """

    def __init__(
        self,
        root: Path,
        samples: Sequence[Sample],
        preprocess: PreprocessConfig,
        augment: AugmentConfig | None = None,
        sample_transform: SampleTransform | None = None,
        seed: int = 0,
        cache: bool = True,
        with_masks: bool = False,
    ) -> None:
        self.root = Path(root)
        self.samples = list(samples)
        self.preprocess = preprocess
        self.augment = augment
        self.sample_transform = sample_transform
        self.seed = seed
        self.epoch = 0
        self.with_masks = with_masks
        self.cache: dict[int, np.ndarray] | None = {} if cache and sample_transform is None else None
        self.sources: dict[int, tuple[np.ndarray, np.ndarray | None]] | None = (
            {} if cache and sample_transform is not None else None)
        self.masks: dict[int, np.ndarray | None] | None = {} if cache and with_masks else None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (called once per epoch; keeps runs reproducible by seed)."""
        self.epoch = epoch

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        """The generator of one random decision stream of a sample (BG_STREAM: background replacement,
        AUG_STREAM: augmentation), deterministic per (seed, epoch, index). The streams are spawned children
        of one SeedSequence, so they are independent: replacing a background says nothing about flipping."""
        children = np.random.SeedSequence([self.seed, self.epoch, index]).spawn(N_STREAMS)
        return np.random.default_rng(children[stream])

    def _mask(self, sample: Sample) -> np.ndarray | None:
        path = self.root / "masks" / sample.path
        if not path.is_file():
            path = path.with_suffix(".png")
        if not path.is_file():
            return None
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DataError(f"{path}: unreadable mask")
        return mask

    def _read(self, index: int) -> np.ndarray:
        try:
            return read_image(self.root / self.samples[index].path)
        except ImageError as exc:
            raise DataError(str(exc)) from None

    def _source(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image HxWx3 uint8 BGR, mask HxW uint8 or None) squared and resized to F x F, cached."""
        if self.sources is not None and index in self.sources:
            return self.sources[index]
        bgr, mask = self._read(index), self._mask(self.samples[index])
        if mask is not None and mask.shape != bgr.shape[:2]:
            raise DataError(f"{self.samples[index].path}: mask is {mask.shape[1]}x{mask.shape[0]}, "
                            f"image is {bgr.shape[1]}x{bgr.shape[0]}")
        size = self.preprocess.frame_size
        bgr = square_frame(bgr, size)
        if mask is not None:
            mask = square_frame(mask, size, nearest=True)
        if self.sources is not None:
            self.sources[index] = (bgr, mask)
        return bgr, mask

    @property
    def cached(self) -> bool:
        """True when frames (or, with a sample transform, their sources) are kept in memory."""
        return self.cache is not None or self.sources is not None

    def preload(self, index: int) -> None:
        """Read (and cache) one sample now, so an unreadable file fails before training starts."""
        if self.sample_transform is not None:
            self._source(index)
        else:
            self.frame(index)
            if self.with_masks:
                self.frame_mask(index)

    def frame(self, index: int) -> np.ndarray:
        """The prepared (not augmented) frame of a sample: F x F x 3 uint8 RGB."""
        if self.sample_transform is not None:
            bgr, mask = self._source(index)
            return prepare_frame(self.sample_transform(bgr, mask, self._rng(index, BG_STREAM)), self.preprocess)
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        frame = prepare_frame(self._read(index), self.preprocess)
        if self.cache is not None:
            self.cache[index] = frame
        return frame

    def frame_mask(self, index: int) -> np.ndarray | None:
        """The sample's foreground mask squared like its frame: F x F uint8, or None without a mask file."""
        if self.sample_transform is not None:
            return self._source(index)[1]
        if self.masks is not None and index in self.masks:
            return self.masks[index]
        mask = self._mask(self.samples[index])
        if mask is not None:
            mask = square_frame(mask, self.preprocess.frame_size, nearest=True)
        if self.masks is not None:
            self.masks[index] = mask
        return mask

    def __getitem__(self, index: int) -> tuple:
        frame = self.frame(index)
        mask = self.frame_mask(index) if self.with_masks else None
        if self.augment is not None:
            if mask is not None:
                frame, mask = augment_frame(frame, self.augment, self._rng(index, AUG_STREAM), mask)
            else:
                frame = augment_frame(frame, self.augment, self._rng(index, AUG_STREAM))
        image = torch.from_numpy(global_input(frame, self.preprocess)[0])
        item = (image, torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1))), self.samples[index].label)
        if self.with_masks:
            item += (foreground_target(mask, self.preprocess.global_size),)
        return item


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
