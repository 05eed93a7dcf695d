"""What one training run is: TrainConfig (every `mgfen-train` flag and its default, the one place they are
set) and the training defaults of each preset (the model side is train.model.mgfen.PRESETS)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge_runtime.novelty import DEFAULT_TARGET_RATE, check_rate
from train.errors import ConfigError
from train.fit.thresholds import DEFAULT_TARGET_PRECISION, DEFAULT_TARGET_RECALL, check_targets
from train.model.mgfen import PRESETS, ModelConfig, preset

# Training defaults per preset (the model side lives in train.model.mgfen.PRESETS).
TRAIN_PRESETS: dict[str, dict] = {
    "paper": {"epochs": 50, "batch": 8, "lr": 1e-3, "optimizer": "sgd", "backbone_lr_scale": 1.0, "head_epochs": 0,
              "freeze_bn": False, "select": "accuracy"},
    "edge": {"epochs": 8, "batch": 16, "lr": 1e-3, "optimizer": "adamw", "backbone_lr_scale": 1.0, "head_epochs": 0,
             "freeze_bn": False, "select": "accuracy"},
}
SELECT_METRICS = ("accuracy", "auc")  # how the best epoch is chosen on val (ties: lower val loss)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs. None means "the preset's value"."""

    data: str
    out: str
    preset: str = "edge"
    backbone: str | None = None
    pretrained: str = "auto"
    epochs: int | None = None
    batch: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float = 1e-4
    device: str = "cpu"
    seed: int = 0
    resume: bool = False
    threads: int = 2
    fpn: bool = True
    use_parts: bool = True
    part_backbone: str | None = None
    global_weight: float | None = None
    part_weight: float = 1.0
    vote_weight: float = 1.0
    augment: bool = True
    frame_size: int | None = None
    fit_frame: bool = True  # with no frame_size: shrink the preset's frame to photos smaller than it (train.data.frame_fit)
    global_size: int | None = None
    crop_size: int | None = None
    luma_space: str | None = None  # where ACE takes luminance from (edge_runtime.preprocess.LUMA_SPACES)
    k: int | None = None
    stability: int = 0
    backbone_lr_scale: float | None = None  # backbone lr = lr * this (train.fit.finetune.param_groups)
    head_epochs: int | None = None  # first epochs train the heads only, on frozen features (linear probe, then fine-tune)
    freeze_bn: bool | None = None  # backbone BatchNorm statistics kept at their pretrained values
    select: str | None = None  # best epoch by val "accuracy" or "auc" (SELECT_METRICS)
    workers: int = 0
    progress: bool = True
    bg_replace: float = 0.5  # probability of online background replacement (needs DATA/masks); 0 = off
    backgrounds: str | None = None  # background photo folder; None = the procedural families
    blend: str = "alpha"
    fg_prior: float = 1.0  # weight of the heatmap foreground prior (train.model.loss); used where DATA/masks exist
    target_recall: float = DEFAULT_TARGET_RECALL  # val counterfeit recall the fitted genuine_at keeps (train.fit.thresholds)
    target_precision: float = DEFAULT_TARGET_PRECISION  # val precision of counterfeit calls at counterfeit_at
    novelty_rate: float = DEFAULT_TARGET_RATE  # val false-refusal rate of the `unknown` threshold (edge_runtime.novelty)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        for name in ("epochs", "batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be >= 1, got {value}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.optimizer not in (None, "sgd", "adamw"):
            raise ConfigError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.backbone_lr_scale is not None and not self.backbone_lr_scale >= 0:
            raise ConfigError(f"--backbone-lr-scale must be >= 0, got {self.backbone_lr_scale}")
        if self.head_epochs is not None and self.head_epochs < 0:
            raise ConfigError(f"--head-epochs must be >= 0, got {self.head_epochs}")
        if self.select not in (None, *SELECT_METRICS):
            raise ConfigError(f"--select must be one of {', '.join(SELECT_METRICS)}, got {self.select!r}")
        if self.stability < 0 or self.threads < 1:
            raise ConfigError("--stability must be >= 0 and threads >= 1")
        try:
            check_rate(self.novelty_rate)
        except ValueError as exc:
            raise ConfigError(f"--novelty-rate: {exc}") from None
        try:
            check_targets(self.target_recall, self.target_precision)
        except ValueError as exc:
            raise ConfigError("--" + str(exc).replace("target ", "target-", 1)) from None  # names the flag

    def resolved(self) -> "TrainConfig":
        """The config with every preset default filled in."""
        defaults = TRAIN_PRESETS[self.preset]
        fill = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **fill)

    def model_config(self, num_classes: int) -> ModelConfig:
        overrides: dict = {"num_classes": num_classes, "fpn": self.fpn, "use_parts": self.use_parts}
        if self.backbone is not None:
            overrides["backbone"] = self.backbone
        if self.part_backbone is not None:
            overrides["part_backbone"] = self.part_backbone
        if self.global_weight is not None:
            overrides["global_weight"] = self.global_weight
        if self.k is not None:
            overrides["k"] = self.k
        pre = {n: getattr(self, n) for n in ("frame_size", "global_size", "crop_size", "luma_space")
               if getattr(self, n) is not None}
        if pre:
            try:
                overrides["preprocess"] = dataclasses.replace(PRESETS[self.preset].preprocess, **pre)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return preset(self.preset, **overrides)
