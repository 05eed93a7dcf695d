"""Fit the novelty table (edge_runtime.novelty) of a trained model at the end of training.

    table = fit_model_novelty(model, train_loader, val_loader, device, target_rate)
    best_state["novelty"] = table_to_state(table)          # in best.pt; export writes novelty.npz

The features are the pooled C5 features of the global view (MGFEN.global_forward_features), the same
tensor global.onnx outputs as global_features, so the scanner scores exactly what was fitted.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from edge_runtime.novelty import ARRAYS, NoveltyTable, fit_novelty
from train.model.mgfen import MGFEN


@torch.no_grad()
def global_features(model: MGFEN, loader: DataLoader | None, device: torch.device) -> np.ndarray:
    """Pooled global features [N,D] float32 of every (image, frame, label) batch of `loader` (eval
    mode, FP32: the exported graph is FP32 too). An empty or missing loader gives [0,D]."""
    model.eval()
    out = []
    for batch in loader if loader is not None else []:
        out.append(model.global_forward_features(batch[0].to(device))[4].float().cpu().numpy())
    dim = model.global_net.fc.in_features
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def fit_model_novelty(model: MGFEN, train_loader: DataLoader, val_loader: DataLoader | None,
                      device: torch.device, target_rate: float, train_groups: Sequence[str] | None = None
                      ) -> NoveltyTable:
    """The novelty table of `model`: fitted on the train split's features (no augmentation), threshold
    from val (or held-out train scores when val is too small, in folds by train_groups, the item of each
    image in train_loader's order: edge_runtime.novelty.fit_novelty)."""
    train_feats = global_features(model, train_loader, device)
    val_feats = global_features(model, val_loader, device)
    return fit_novelty(train_feats, val_feats if len(val_feats) else None, target_rate, train_groups)


def table_to_state(table: NoveltyTable) -> dict:
    """The table as a plain dict for a checkpoint (arrays float32 to keep best.pt small)."""
    data = dataclasses.asdict(table)
    for key in ARRAYS:
        data[key] = getattr(table, key).astype(np.float32)
    return data


def table_from_state(data: dict) -> NoveltyTable:
    """Inverse of table_to_state (NoveltyTable casts the arrays to its dtypes)."""
    return NoveltyTable(**dict(data))
