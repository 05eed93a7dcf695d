"""MGFEN: multi-scale features (MSFM), heatmap part proposals (APPM) and a heatmap-weighted vote (WCDM).

    cfg = preset("edge")                                  # or ModelConfig(...)
    model = build_model(cfg, pretrained="auto")
    g_logits, heatmap, boxes, box_scores = model.global_forward(image)     # what global.onnx computes
    part_logits = model.parts_forward(crops)                                # what parts.onnx computes
    out = model(image, frame)                                               # training: both + the vote

global_forward is written to export to ONNX with fixed shapes: peak picking is K unrolled steps of
argmax + window suppression on tensors (K is a Python constant, nothing loops over data), boxes are
computed in-graph and depend on the input. Box scores (mean heatmap inside each box) are differentiable,
so the vote loss trains the heatmap; the box coordinates themselves are not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, roi_align

from edge_runtime.names import CLASS_NAMES
from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.roi import vote_logits
from train.errors import ConfigError
from train.model.backbones import BACKBONES, build_backbone

PART_BACKBONES = ("shared", "separate")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one MGFEN model. Travels in every checkpoint (to_dict / from_dict).

    backbone: one of BACKBONES. num_classes: C. k: number of part boxes K (fixed).
    fpn: FPN top-down fusion P2..P5 (False: single-scale heatmap from C5, the `--no-fpn` ablation).
    use_parts: ROI branch and vote (False: global logits only, the `--no-parts` baseline).
    box_size: normalised side of each ROI box in the F x F frame; None means crop_size / frame_size, so
        crops are 1:1 pixels of the full-resolution frame. Boxes are snapped to whole frame pixels.
    global_weight: weight of the global logits in the vote. part_backbone: "shared" (one backbone and
        classifier for global and parts, as in the paper) or "separate" (a second backbone and classifier).
    fpn_channels: width of P2..P5. suppression: fraction of the box side (per axis) within which a picked
        box suppresses other candidates (0.5: two boxes overlap at most half a side along an axis).
    dropout: before each linear classifier. freeze_early: keep the pretrained stem..C3 fixed (the CPU
        training cost is mostly backward through those high-resolution layers).
    preprocess: the shared preprocessing (frame F, global S, crop R, ACE, brightness).
    """

    backbone: str = "efficientnet_lite0"
    num_classes: int = len(CLASS_NAMES)
    k: int = 4
    fpn: bool = True
    use_parts: bool = True
    box_size: float | None = None
    global_weight: float = 1.0
    part_backbone: str = "shared"
    fpn_channels: int = 64
    suppression: float = 0.5
    dropout: float = 0.2
    freeze_early: bool = False
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {self.backbone!r}; expected one of {', '.join(BACKBONES)}")
        if self.part_backbone not in PART_BACKBONES:
            raise ConfigError(f"part_backbone must be one of {PART_BACKBONES}, got {self.part_backbone!r}")
        if self.num_classes < 2:
            raise ConfigError("num_classes must be at least 2")
        if self.k < 1:
            raise ConfigError("k must be at least 1")
        p = self.preprocess
        for name in ("global_size", "crop_size"):
            if getattr(p, name) % 32:
                raise ConfigError(f"preprocess.{name} must be a multiple of 32, got {getattr(p, name)}")
        if self.box_size is not None and not 0.0 < self.box_size <= 1.0:
            raise ConfigError("box_size must be in (0, 1]")
        if not 0.0 <= self.suppression <= 1.0:
            raise ConfigError("suppression must be in [0, 1]")
        if self.global_weight < 0:
            raise ConfigError("global_weight must be >= 0")

    @property
    def box_pixels(self) -> int:
        """Side of each ROI box in pixels of the F x F frame."""
        f = self.preprocess.frame_size
        side = self.preprocess.crop_size / f if self.box_size is None else self.box_size
        return max(1, min(f, int(round(side * f))))

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["preprocess"] = self.preprocess.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("preprocess"), dict):
            values["preprocess"] = PreprocessConfig.from_dict(values["preprocess"])
        return cls(**values)


PRESETS: dict[str, ModelConfig] = {
    # The paper: ResNet50, global 448, crops 224 from a 1024 px frame, K 4, shared backbone.
    "paper": ModelConfig(
        backbone="resnet50",
        fpn_channels=256,
        preprocess=PreprocessConfig(frame_size=1024, global_size=448, crop_size=224),
    ),
    # Edge: EfficientNet-Lite0 (offline ImageNet weights, ReLU6, INT8-friendly), a 128 px global view
    # of a 768 px frame (enough to find the tag's regions), K 4 crops of 96 px at 1:1 frame pixels
    # (the synthetic dot pitch of 4 px at 1024 is 3 px here), shared backbone, stem..C3 frozen.
    # Luminance from LAB: Y of YCrCb would make the frame's CPU stages about 2x cheaper (cost_model.md) but
    # lost ROC-AUC on the development sets (docs/results/realdata_luma_space.md).
    "edge": ModelConfig(
        backbone="efficientnet_lite0",
        fpn_channels=64,
        freeze_early=True,
        preprocess=PreprocessConfig(frame_size=768, global_size=128, crop_size=96),
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset (PRESETS), with fields replaced by `overrides` (e.g. fpn=False, use_parts=False)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    try:
        return dataclasses.replace(PRESETS[name], **overrides)
    except TypeError as exc:
        raise ConfigError(f"bad preset override: {exc}") from None


class _Classifier(nn.Module):
    """Backbone C5 -> global average pool -> dropout -> linear: [B,3,H,W] normalised -> [B,C]."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(backbone.channels[-1], num_classes)

    def logits(self, c5: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(c5.mean((2, 3))))


class MGFEN(nn.Module):
    """The model. Inputs are float32 RGB in [0, 1]; ImageNet normalisation happens inside."""

    def __init__(self, cfg: ModelConfig, pretrained: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        backbone = build_backbone(cfg.backbone, pretrained)
        if cfg.freeze_early:
            backbone.freeze_early()
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self.global_net = _Classifier(backbone, cfg.num_classes, cfg.dropout)
        chans = list(backbone.channels)
        if cfg.fpn:
            self.msfm = FeaturePyramidNetwork(chans, cfg.fpn_channels)
            self.heads = nn.ModuleList(nn.Conv2d(cfg.fpn_channels, 1, 3, padding=1) for _ in chans)
        else:
            self.msfm = nn.Conv2d(chans[-1], cfg.fpn_channels, 1)
            self.heads = nn.ModuleList([nn.Conv2d(cfg.fpn_channels, 1, 3, padding=1)])
        self.part_net: _Classifier | None = None
        if cfg.use_parts and cfg.part_backbone == "separate":
            part_backbone = build_backbone(cfg.backbone, pretrained)
            if cfg.freeze_early:
                part_backbone.freeze_early()
            self.part_net = _Classifier(part_backbone, cfg.num_classes, cfg.dropout)

    # ------------------------------------------------------------------------------------------ APPM

    @property
    def heatmap_size(self) -> int:
        """Side h = w of the fused heatmap: stride 4 of the global view with the FPN, stride 32 without."""
        return self.cfg.preprocess.global_size // (4 if self.cfg.fpn else 32)

    def _heatmap(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """C2..C5 -> fused heatmap [B,1,h,w] in [0,1]: mean of sigmoid(conv3x3(P_i)) at P2's size."""
        if not self.cfg.fpn:
            return torch.sigmoid(self.heads[0](self.msfm(feats[-1])))
        pyramid = self.msfm({str(i): f for i, f in enumerate(feats)})
        maps = [torch.sigmoid(head(p)) for head, p in zip(self.heads, pyramid.values())]
        size = maps[0].shape[-2:]
        ups = [maps[0]] + [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps[1:]]
        return torch.stack(ups, 0).mean(0)

    def _pick_boxes(self, heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmap [B,1,h,w] -> boxes [B,K,4] normalised xyxy (snapped to frame pixels), scores [B,K].

        Every candidate top-left cell of the heatmap is scored by the mean heat of a box-sized window
        (avg_pool, stride 1). K times: take the argmax, then suppress candidates closer than
        suppression * window along both axes. Score of a box = its window mean (differentiable).
        """
        cfg = self.cfg
        b = heatmap.shape[0]
        h = w = self.heatmap_size  # a Python constant, so the exported graph has no shape arithmetic
        f = cfg.preprocess.frame_size
        side_px = cfg.box_pixels
        win_h = max(1, min(h, int(round(side_px / f * h))))
        win_w = max(1, min(w, int(round(side_px / f * w))))
        window = F.avg_pool2d(heatmap, (win_h, win_w), stride=1)  # [B,1,h',w']
        hh, ww = h - win_h + 1, w - win_w + 1
        flat = window.reshape(b, hh * ww)
        pos = torch.arange(hh * ww, device=heatmap.device)
        rows = torch.div(pos, ww, rounding_mode="floor")
        cols = pos - rows * ww
        reach_h = max(1.0, cfg.suppression * win_h)
        reach_w = max(1.0, cfg.suppression * win_w)
        work = flat.detach()
        picks = []
        for _ in range(cfg.k):  # K is a constant: unrolled in the exported graph
            idx = work.argmax(1)  # [B]
            picks.append(idx)
            r = torch.div(idx, ww, rounding_mode="floor")
            c = idx - r * ww
            near = ((rows[None] - r[:, None]).abs() < reach_h) & ((cols[None] - c[:, None]).abs() < reach_w)
            work = torch.where(near, torch.full_like(work, -1.0), work)
        idx = torch.stack(picks, 1)  # [B,K]
        scores = torch.gather(flat, 1, idx)
        r = torch.div(idx, ww, rounding_mode="floor")
        c = idx - r * ww
        # Snap the top-left to a whole pixel of the F x F frame, keeping the box inside it.
        x1 = torch.clamp(torch.round(c.to(heatmap.dtype) * (f / w)), 0, f - side_px)
        y1 = torch.clamp(torch.round(r.to(heatmap.dtype) * (f / h)), 0, f - side_px)
        boxes = torch.stack([x1, y1, x1 + side_px, y1 + side_px], -1) / f
        return boxes, scores

    # ------------------------------------------------------------------------------------- branches

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def global_forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """image [B,3,S,S] float32 RGB in [0,1] -> (global_logits [B,C], heatmap [B,1,h,w] in [0,1],
        boxes [B,K,4] normalised x1,y1,x2,y2 in [0,1], box_scores [B,K] mean heatmap in each box)."""
        return self.global_forward_features(image)[:4]

    def global_forward_features(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """global_forward plus the pooled C5 features [B,D] the global classifier reads (what
        global.onnx's global_features output is; the novelty score is computed from them)."""
        feats = self.global_net.backbone(self._normalise(image))
        pooled = feats[-1].mean((2, 3))
        logits = self.global_net.fc(self.global_net.drop(pooled))
        heatmap = self._heatmap(feats)
        boxes, scores = self._pick_boxes(heatmap)
        return logits, heatmap, boxes, scores, pooled

    def parts_forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [N,3,R,R] float32 RGB in [0,1] -> part_logits [N,C]."""
        net = self.part_net if self.part_net is not None else self.global_net
        return net.logits(net.backbone(self._normalise(crops))[-1])

    def crop(self, frame: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """frame [B,3,F,F] float32 in [0,1], boxes [B,K,4] normalised -> crops [B*K,3,R,R] (roi_align as
        edge_runtime.roi.crop_rois: aligned, one sample per bin, boxes scaled by F)."""
        b, k = boxes.shape[:2]
        size = frame.shape[-1]
        batch_idx = torch.arange(b, device=boxes.device, dtype=boxes.dtype).repeat_interleave(k)[:, None]
        rois = torch.cat([batch_idx, boxes.reshape(b * k, 4) * size], 1)
        r = self.cfg.preprocess.crop_size
        return roi_align(frame, rois, output_size=r, spatial_scale=1.0, sampling_ratio=1, aligned=True)

    def forward(self, image: torch.Tensor, frame: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image [B,3,S,S], frame [B,3,F,F] (both float32 RGB in [0,1]) -> dict of global_logits [B,C],
        heatmap, boxes [B,K,4], box_scores [B,K], part_logits [B,K,C] (only with use_parts) and
        logits [B,C] = edge_runtime.roi.vote_logits(...)."""
        g, heatmap, boxes, scores = self.global_forward(image)
        out = {"global_logits": g, "heatmap": heatmap, "boxes": boxes, "box_scores": scores}
        if not self.cfg.use_parts:
            out["logits"] = g
            return out
        if frame is None:
            raise ValueError("forward needs the full-resolution frame when use_parts is on")
        crops = self.crop(frame, boxes.detach())
        parts = self.parts_forward(crops).reshape(boxes.shape[0], boxes.shape[1], -1)
        out["part_logits"] = parts
        out["logits"] = vote_logits(g, parts, scores, self.cfg.global_weight, True)
        return out


def build_model(cfg: ModelConfig, pretrained: str | None = None) -> MGFEN:
    """The MGFEN for `cfg`; `pretrained` as in train.model.backbones (None/"none", "auto" or a weights path)."""
    return MGFEN(cfg, pretrained)
