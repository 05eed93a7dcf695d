"""MGFEN loss: CE(global) + lambda * mean_k CE(part_k) + vote_weight * CE(vote) + fg_weight * L_fg.

The vote term is what trains the heatmap: the vote weights are the box scores (mean heatmap in each box),
so CE(vote) moves heat towards boxes whose parts classify well. With use_parts off only CE(global) is left.

L_fg, the foreground prior (a toolkit addition; needs foreground masks, the ones background replacement
uses): the share of the heatmap's mass that lies outside the item. Without it, when the background
carries no usable signal (replaced every time), the vote alone can leave the heat on the frame's border
and the part crops then look at background (seen on the biased ablation: all boxes in the corners). The
prior only says "not on the background"; where on the item the heat goes is still the vote's choice.
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
    fg_weight: float = 0.0


def foreground_prior(heatmap: torch.Tensor, fg: torch.Tensor) -> torch.Tensor | None:
    """Mean over samples with a mask of (heat outside the foreground) / (all heat).

    heatmap [B,1,h,w] in [0,1]; fg [B,1,S,S] foreground fraction in [0,1], or -1 everywhere for a sample
    without a mask. Returns a scalar, or None when no sample of the batch has a mask."""
    known = fg[:, 0, 0, 0] >= 0
    if not bool(known.any()):
        return None
    heat = heatmap[known].float()
    target = F.adaptive_avg_pool2d(fg[known].to(heat.dtype), heat.shape[-2:])
    outside = (heat * (1.0 - target)).sum(dim=(1, 2, 3))
    total = heat.sum(dim=(1, 2, 3)) + 1e-6
    return (outside / total).mean()


def mgfen_loss(out: dict[str, torch.Tensor], labels: torch.Tensor, cfg: LossConfig = LossConfig(),
               fg: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """out: MGFEN.forward's dict; labels: [B] int64 class indices; fg: [B,1,S,S] foreground targets
    (train.data.dataset.foreground_target) for the prior, or None. Returns (scalar loss, float terms)."""
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
    if cfg.fg_weight > 0 and fg is not None and "part_logits" in out:
        prior = foreground_prior(out["heatmap"], fg)
        if prior is not None:
            terms["fg"] = prior
            total = total + cfg.fg_weight * prior
    return total, {name: float(value.detach()) for name, value in terms.items()}
