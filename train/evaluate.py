"""Evaluation: run a model over a dataset, compute metrics, draw heatmap overlays with the chosen boxes.

    model, info = load_checkpoint("runs/x/best.pt")
    report = evaluate_checkpoint(Path("runs/x/best.pt"), Path("data"), split="test", out=Path("runs/x/eval"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from edge_runtime.names import POSITIVE_CLASS
from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.roi import Thresholds
from train import risk_coverage
from train.checkpoint import load_checkpoint
from train.data import FrameDataset, select_split
from train.errors import ConfigError
from train.metrics import classification_report
from train.model import MGFEN
from train.thresholds import COUNTERFEIT, GENUINE, decision_metrics, decisions


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


def overlay(frame: np.ndarray, heatmap: np.ndarray, boxes: np.ndarray, title: str = "", size: int = 512) -> np.ndarray:
    """frame F x F x 3 uint8 RGB, heatmap [1,h,w] in [0,1], boxes [K,4] normalised -> size x size x 3
    uint8 BGR picture: the frame with the heatmap blended in (jet) and the boxes drawn, numbered by rank."""
    base = cv2.cvtColor(cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    heat = cv2.resize(np.clip(heatmap[0], 0, 1).astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    span = float(heat.max() - heat.min())
    norm = (heat - heat.min()) / span if span > 1e-8 else np.zeros_like(heat)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    out = cv2.addWeighted(base, 0.6, colour, 0.4, 0)
    for rank, (x1, y1, x2, y2) in enumerate(np.asarray(boxes).reshape(-1, 4)):
        p1 = (int(round(x1 * size)), int(round(y1 * size)))
        p2 = (int(round(x2 * size)) - 1, int(round(y2 * size)) - 1)
        cv2.rectangle(out, p1, p2, (255, 255, 255), 2)
        cv2.putText(out, str(rank + 1), (p1[0] + 3, p1[1] + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    if title:
        cv2.putText(out, title, (6, size - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return out


def checkpoint_thresholds(info: dict) -> tuple[Thresholds, dict]:
    """The decision thresholds of a checkpoint's info dict and where they come from: (Thresholds,
    {"genuine_at", "counterfeit_at", "source", "fit"}). Checkpoints made before thresholds were fitted carry
    Thresholds()' defaults and no fit record."""
    th = Thresholds(**info["thresholds"]) if info.get("thresholds") else Thresholds()
    fit = info.get("threshold_fit")
    source = ("fitted on val for counterfeit recall {target_recall} and precision {target_precision} "
              "({n_counterfeit} counterfeit, {n_genuine} genuine val images; genuine_at {genuine_method}, "
              "counterfeit_at {counterfeit_method})".format(**fit) if fit
              else "the checkpoint's thresholds (no fit record: the defaults unless set by hand)")
    return th, {"genuine_at": th.genuine_at, "counterfeit_at": th.counterfeit_at, "source": source, "fit": fit}


def decision_report(is_counterfeit: np.ndarray, p_counterfeit: np.ndarray, thresholds: Thresholds) -> dict:
    """Accuracy on decided items, coverage and counterfeit recall at `thresholds`, and the risk-coverage
    curve and table (train.risk_coverage). is_counterfeit: [N] bool; p_counterfeit: [N] float."""
    return {"at_thresholds": decision_metrics(is_counterfeit, p_counterfeit, thresholds),
            "risk_coverage": {"table": risk_coverage.table(is_counterfeit, p_counterfeit),
                              "curve": risk_coverage.curve(is_counterfeit, p_counterfeit)}}


def make_loader(root: Path, samples, preprocess: PreprocessConfig, batch: int, workers: int = 0) -> DataLoader:
    """An evaluation loader (no augmentation, no shuffling) over `samples`."""
    ds = FrameDataset(root, samples, preprocess, augment=None, cache=False)
    return DataLoader(ds, batch_size=batch, shuffle=False, num_workers=workers)


def evaluate_checkpoint(
    ckpt: Path,
    data: Path,
    split: str = "test",
    out: Path | None = None,
    device: str = "cpu",
    batch: int = 8,
    samples: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Metrics of a checkpoint on one split of a data folder (or "all"): classification metrics, and at the
    checkpoint's decision thresholds accuracy on decided items, coverage and counterfeit recall, plus the
    risk-coverage curve. With `out`, writes report.json, risk_coverage.png, risk_coverage.md and heatmap
    overlays overlay_XX.png of the first `samples` images. Returns the report dict."""
    dev = resolve_device(device)
    model, info = load_checkpoint(ckpt, map_location="cpu")
    model.to(dev)
    classes = list(info["classes"])
    index, chosen = select_split(data, split, classes, seed)
    loader = make_loader(index.root, chosen, model.cfg.preprocess, batch)
    pred = predict(model, loader, dev, keep=samples, progress=progress)
    positive = classes.index(POSITIVE_CLASS) if POSITIVE_CLASS in classes else len(classes) - 1
    thresholds, threshold_info = checkpoint_thresholds(info)
    p_cf = pred.probs[:, positive] if len(pred.probs) else np.zeros(0)
    report = {
        "checkpoint": str(ckpt),
        "data": str(data),
        "split": split,
        "classes": classes,
        "model_config": model.cfg.to_dict(),
        "metrics": classification_report(pred.labels, pred.probs),
        "loss": pred.loss,
        "thresholds": threshold_info,
        "decisions": decision_report(pred.labels == positive, p_cf, thresholds),
        "overlays": [],
    }
    names = {GENUINE: "genuine", COUNTERFEIT: "counterfeit"}
    calls = [names.get(int(d), "uncertain") for d in decisions(p_cf, thresholds)]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for i in range(len(pred.frames)):
            entry = {"file": f"overlay_{i:02d}.png", "image": chosen[i].path, "true": classes[pred.labels[i]],
                     "pred": classes[int(pred.probs[i].argmax())], "p_counterfeit": float(p_cf[i]),
                     "decision": calls[i]}
            title = f"{entry['image']}  true={entry['true']}  P(cf)={entry['p_counterfeit']:.2f} -> {entry['decision']}"
            cv2.imwrite(str(out / entry["file"]), overlay(pred.frames[i], pred.heatmaps[i], pred.boxes[i], title))
            report["overlays"].append({**entry, "boxes": pred.boxes[i].tolist()})
        rc = report["decisions"]
        risk_coverage.draw(rc["risk_coverage"]["curve"], out / "risk_coverage.png", fitted=rc["at_thresholds"],
                           title=f"{split}, n {len(p_cf)}")
        (out / "risk_coverage.md").write_text(
            risk_coverage.format_table(rc["risk_coverage"]["table"], fitted=rc["at_thresholds"]) + "\n")
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report
