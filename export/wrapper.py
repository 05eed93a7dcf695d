"""Export-only modules: each wraps one branch of a trained MGFEN so torch.onnx.export sees a plain
tensors-in, tuple-out forward, and the training model stays free of tracing concerns.

    GlobalGraph(model)(image [1,3,S,S] float32 in [0,1])
        -> (global_logits [1,C], heatmap [1,1,h,w], boxes [1,K,4], box_scores [1,K], global_features [1,D])
    PartsGraph(model)(crops [K,3,R,R] float32 in [0,1]) -> part_logits [K,C]
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalGraph(nn.Module):
    """model.global_forward_features as a module whose outputs follow names.EXPORTED_GLOBAL_OUTPUTS."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.global_forward_features(image))


class PartsGraph(nn.Module):
    """model.parts_forward as a module: crops [K,3,R,R] -> part_logits [K,C]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.model.parts_forward(crops)
