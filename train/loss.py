"""MGFEN loss: CE(global) + lambda * mean_k CE(part_k) + vote_weight * CE(vote).

The vote term is what trains the heatmap: the vote weights are the box scores (mean heatmap in each box),
so CE(vote) moves heat towards boxes whose parts classify well. With use_parts off only CE(global) is left.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossConfig:
    """part_weight: lambda (paper: 1.0); vote_weight: weight of CE on the voted logits (0 disables)."""

    part_weight: float = 1.0
    vote_weight: float = 1.0
    label_smoothing: float = 0.0


def mgfen_loss(out: dict[str, torch.Tensor], labels: torch.Tensor, cfg: LossConfig = LossConfig()) -> tuple[torch.Tensor, dict[str, float]]:
    """out: MGFEN.forward's dict; labels: [B] int64 class indices. Returns (scalar loss, float terms)."""
    ls = cfg.label_smoothing
    terms: dict[str, torch.Tensor] = {"global": F.cross_entropy(out["global_logits"].float(), labels, label_smoothing=ls)}
    if "part_logits" in out:
        parts = out["part_logits"].float()
        b, k, c = parts.shape
        terms["parts"] = F.cross_entropy(parts.reshape(b * k, c), labels.repeat_interleave(k), label_smoothing=ls)
        terms["vote"] = F.cross_entropy(out["logits"].float(), labels, label_smoothing=ls)
    total = terms["global"]
    if "parts" in terms:
        total = total + cfg.part_weight * terms["parts"] + cfg.vote_weight * terms["vote"]
    return total, {name: float(value.detach()) for name, value in terms.items()}
