"""Running a model over a dataset: the device, an evaluation loader and the predictions (probabilities,
heatmaps, boxes) that training, evaluation and the baselines read.

    preds = predict(model, make_loader(root, samples, model.cfg.preprocess, batch=8), resolve_device("cpu"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from edge_runtime.preprocess import PreprocessConfig
from train.data.dataset import FrameDataset
from train.errors import ConfigError
from train.model.mgfen import MGFEN


@dataclass
class Predictions:
    """labels [N] int64, probs [N,C] float32 (softmax of the voted logits), loss (mean CE), and for the
    first `keep` images: heatmaps [n,1,h,w], boxes [n,K,4], frames [n,F,F,3] uint8 RGB."""

    labels: np.ndarray
    probs: np.ndarray
    loss: float
    heatmaps: np.ndarray
    boxes: np.ndarray
    frames: np.ndarray


def resolve_device(name: str) -> torch.device:
    """"cpu" or "cuda[:i]" -> torch.device; ConfigError when CUDA is asked for and absent."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
        return torch.device(name)
    if name != "cpu":
        raise ConfigError(f"--device must be cpu or cuda, got {name!r}")
    return torch.device("cpu")


@torch.no_grad()
def predict(model: MGFEN, loader: DataLoader, device: torch.device, keep: int = 0, progress: bool = False) -> Predictions:
    """Run the model (eval mode) over `loader` batches of (image, frame uint8, label)."""
    model.eval()
    labels, probs, losses = [], [], []
    heat, boxes, frames = [], [], []
    kept = 0
    amp = device.type == "cuda"
    for image, frame, label in tqdm(loader, desc="eval", leave=False, disable=not progress):
        image = image.to(device, non_blocking=True)
        frame_f = frame.to(device, non_blocking=True).float().div_(255.0)
        label = label.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out = model(image, frame_f)
        logits = out["logits"].float()
        losses.append(F.cross_entropy(logits, label, reduction="sum").item())
        labels.append(label.cpu().numpy())
        probs.append(logits.softmax(1).cpu().numpy())
        if kept < keep:
            n = min(keep - kept, image.shape[0])
            heat.append(out["heatmap"][:n].float().cpu().numpy())
            boxes.append(out["boxes"][:n].float().cpu().numpy())
            frames.append(frame[:n].permute(0, 2, 3, 1).numpy())
            kept += n
    labels_a = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    return Predictions(
        labels=labels_a,
        probs=np.concatenate(probs) if probs else np.zeros((0, model.cfg.num_classes), np.float32),
        loss=float(sum(losses) / max(len(labels_a), 1)),
        heatmaps=np.concatenate(heat) if heat else np.zeros((0, 1, 1, 1), np.float32),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, model.cfg.k, 4), np.float32),
        frames=np.concatenate(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8),
    )


def make_loader(root: Path, samples, preprocess: PreprocessConfig, batch: int, workers: int = 0) -> DataLoader:
    """An evaluation loader (no augmentation, no shuffling) over `samples`."""
    ds = FrameDataset(root, samples, preprocess, augment=None, cache=False)
    return DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)
