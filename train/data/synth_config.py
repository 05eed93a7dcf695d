"""What determines a synthetic dataset (train/data/synth.py): SynthConfig, its micro-feature parameters
(MicroSpec, drawn by train/data/synth_tag.py) and the error its checks raise."""

from __future__ import annotations

from dataclasses import dataclass, field

from edge_runtime.errors import MgfenError
from train.enhance.backgrounds import FAMILIES

MIN_IMAGES = 20


@dataclass(frozen=True)
class MicroSpec:
    """Micro-feature parameters. Sizes in frame pixels at pose scale 1; a counterfeit adds k * *_delta."""

    dot_jitter: float = 0.02  # sd of dot position, fraction of the pitch
    dot_jitter_delta: float = 0.18
    dot_gain_sd: float = 0.03  # sd of relative dot radius
    dot_gain_delta: float = 0.08
    dot_ragged: float = 0.02  # amplitude of dot-edge raggedness, fraction of the radius
    dot_ragged_delta: float = 0.35
    dot_drop_delta: float = 0.02  # probability that a dot fails to adhere
    foil_blur: float = 0.35  # edge blur sigma, px
    foil_blur_delta: float = 0.7
    foil_speck_delta: float = 0.9  # leakage speck radius, px (times a per-speck factor in [0.4, 1.2])
    text_thicken_delta: float = 0.15  # threshold drop on the blurred supersampled strokes
    text_break_delta: float = 1.1  # radius of stroke breaks, px (times a per-break factor in [0.5, 1])


class SynthError(MgfenError):
    """Bad synthetic-dataset parameters or an output folder that cannot be used."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic dataset. Same config => byte-identical files."""

    n: int = 300
    size: int = 1024  # square frames, px
    bias: float = 0.9  # train split: P(background from the own class's half)
    strength: float = 1.0  # scales every micro difference; 0 => classes identically distributed
    seed: int = 0
    backgrounds: str | None = None  # photo folder; None => procedural families
    families: tuple[str, ...] = FAMILIES
    dot_pitch: float = 3.5  # halftone pitch at pose scale 1, frame px (3.0-4.0 px over the scale range)
    micro_text_px: float = 7.0  # micro-text cap height at pose scale 1, frame px
    tag_frac: float = 0.6  # tag width / frame size at pose scale 1
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_rotation: float = 35.0  # degrees
    noise_sigma: float = 2.0  # sensor noise sd in 8-bit levels at mid grey
    lens_blur: float = 0.5  # optical blur sigma over the whole frame, px
    split: tuple[float, float, float] = (0.7, 0.2, 0.1)
    micro: MicroSpec = field(default_factory=MicroSpec)

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n >= MIN_IMAGES):
            raise SynthError(f"--n must be an integer >= {MIN_IMAGES} so every split holds both classes, got {self.n}")
        if not (isinstance(self.size, int) and 128 <= self.size <= 8192):
            raise SynthError(f"--size must be an integer in [128, 8192], got {self.size}")
        if not 0.0 <= self.bias <= 1.0:
            raise SynthError(f"--bias must be in [0, 1], got {self.bias}")
        if not 0.0 <= self.strength <= 5.0:
            raise SynthError(f"--strength must be in [0, 5], got {self.strength}")
        if self.seed < 0:
            raise SynthError(f"--seed must be >= 0, got {self.seed}")
        if not 1.5 <= self.dot_pitch <= 32:
            raise SynthError(f"dot_pitch must be in [1.5, 32] px, got {self.dot_pitch}")
        if self.backgrounds is None and len(self.families) < 2:
            raise SynthError("at least two background families are needed (one half per class)")
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise SynthError(f"split fractions must be positive and sum to 1, got {self.split}")
