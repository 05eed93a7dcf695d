"""Frozen ImageNet features of the edge backbone for the linear-probe baseline.

The edge preset's backbone (EfficientNet-Lite0, offline ImageNet weights) sees each image the way the
edge model's global view does: edge_runtime.preprocess.prepare_frame with the edge preset's settings
(centre square, CLAHE, brightness), then global_input at the probe size; C5 (1280 channels after the
head conv) is averaged over space.

    probe = FrozenProbe((128, 384))
    frames = np.stack([probe.frame(bgr) for bgr in images])   # [B, F, F, 3] uint8 RGB
    feats = probe.encode(frames)                               # {128: [B, 1280] float64, 384: ...}
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from edge_runtime.preprocess import PreprocessConfig, global_input, prepare_frame
from train.errors import ConfigError
from train.model.backbones import build_backbone
from train.model.mgfen import preset

EDGE = preset("edge")
PROBE_LARGE = 3 * EDGE.preprocess.global_size  # the second probe size, where finer detail survives
DEFAULT_PROBE_SIZES = (EDGE.preprocess.global_size, PROBE_LARGE)
_STRIDE = 32  # the backbone's output stride: input sides must be multiples of it


def parse_probe_sizes(text: str) -> tuple[int, ...]:
    """"128,384" -> (128, 384); "none" or "" -> () (no probe). ConfigError for anything else."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ConfigError(f"--probe-sizes must be comma-separated integers or 'none', got {text!r}") from None
    return check_probe_sizes(sizes)


def check_probe_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Sizes as a tuple, each a positive multiple of 32 and no repeats; ConfigError otherwise."""
    bad = [s for s in sizes if s < _STRIDE or s % _STRIDE]
    if bad or len(set(sizes)) != len(sizes):
        raise ConfigError(f"probe sizes must be distinct multiples of {_STRIDE} (>= {_STRIDE}), got {list(sizes)}")
    return tuple(int(s) for s in sizes)


class FrozenProbe:
    """EfficientNet-Lite0 (weights "auto": the offline pip package, or a path) in eval mode, no gradients.

    sizes: probe input sides; device: torch device name; the frame side F is the edge preset's frame
    size, or the largest probe size when that is larger."""

    FEATURES = 1280

    def __init__(self, sizes: Sequence[int], device: str = "cpu", pretrained: str = "auto") -> None:
        self.sizes = check_probe_sizes(sizes)
        if not self.sizes:
            raise ConfigError("FrozenProbe needs at least one size")
        base = EDGE.preprocess
        self.preprocess = dataclasses.replace(base, frame_size=max(base.frame_size, *self.sizes))
        self._views = {s: dataclasses.replace(self.preprocess, global_size=s) for s in self.sizes}
        self.device = torch.device(device)
        self.net = build_backbone(EDGE.backbone, pretrained).to(self.device).eval()
        self.mean = torch.tensor(self.net.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.net.std, device=self.device).view(1, 3, 1, 1)

    @property
    def config(self) -> PreprocessConfig:
        """The preprocessing every frame goes through (the edge preset's, frame side as above)."""
        return self.preprocess

    def frame(self, bgr: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 BGR image -> F x F x 3 uint8 RGB frame (prepare_frame)."""
        return prepare_frame(bgr, self.preprocess)

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> dict[int, np.ndarray]:
        """[B, F, F, 3] uint8 RGB frames -> {size: [B, 1280] float64 pooled C5 features}."""
        out = {}
        for size, view in self._views.items():
            x = np.concatenate([global_input(f, view) for f in frames])  # [B, 3, s, s] float32 in [0, 1]
            x = (torch.from_numpy(x).to(self.device) - self.mean) / self.std
            out[size] = self.net(x)[-1].mean((2, 3)).double().cpu().numpy()
        return out
