"""The torch Dataset of training and evaluation: samples of a data folder (train.data.folders) through
exactly the runtime preprocessing (edge_runtime.preprocess), with augmentations that keep micro features.

One sample -> (image [3,S,S] float32 RGB in [0,1], frame [3,F,F] uint8 RGB, label int64).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from edge_runtime.errors import ImageError
from edge_runtime.preprocess import PreprocessConfig, global_input, prepare_frame, read_image, square_frame
from train.data.folders import Sample
from train.errors import DataError

BG_STREAM, AUG_STREAM, N_STREAMS = 0, 1, 2  # FrameDataset._rng: independent random streams per sample

# Optional per-sample transform (background replacement): (frame_bgr HxWx3 uint8, mask HxW uint8 or None,
# rng) -> frame_bgr HxWx3 uint8, applied to the source image before prepare_frame.
SampleTransform = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], np.ndarray]


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
