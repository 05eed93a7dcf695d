"""The steps of one training run (train.fit.trainer._train_once calls them in this order): the frame fit,
the datasets and loaders, the optimiser, one epoch, the best-epoch selection with its checkpoints, and the
closing step that fits the thresholds, the novelty table and the retake gate and tests the best model.

Every step takes what it needs as arguments; the run's files are written by the step that owns them
(config.json by the caller, best.pt / last.pt / metrics.* by `select_and_save`, report.json by `finish`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from edge_runtime.names import POSITIVE_CLASS
from edge_runtime.preprocess import PreprocessConfig
from train.data.dataset import AugmentConfig, FrameDataset, SampleTransform
from train.data.folders import DataIndex, Sample
from train.data.frame_fit import fit_frame_size, median_square_side
from train.evaluate.metrics import classification_report
from train.evaluate.predict import make_loader, predict
from train.fit.config import TrainConfig
from train.fit.finetune import freeze_batchnorm, param_groups, set_backbone_trainable
from train.fit.gate_fit import fit_quality
from train.fit.novelty_fit import fit_model_novelty, table_to_state
from train.fit.thresholds import decision_metrics, fit_thresholds
from train.model.checkpoint import read_checkpoint, save_checkpoint, write_checkpoint
from train.model.loss import LossConfig, mgfen_loss
from train.model.mgfen import MGFEN, PRESETS


def write_json(path: Path, data) -> None:
    """`data` as indented JSON, replacing `path` atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------- data


def fit_frame(cfg: TrainConfig, index: DataIndex, train_s: list) -> tuple[TrainConfig, dict]:
    """(cfg with frame_size set to the fitted frame, report.json's "frame" record). The frame is fitted to
    the train split's median square side (train.data.frame_fit) unless --frame-size was given or fit_frame is off."""
    pre = cfg.model_config(len(index.classes)).preprocess
    if cfg.frame_size is not None or not cfg.fit_frame:
        return cfg, {"size": pre.frame_size, "preset": PRESETS[cfg.preset].preprocess.frame_size, "fitted": False}
    side = median_square_side(index.root, train_s)
    size = fit_frame_size(side, pre.frame_size, pre.global_size, pre.crop_size)
    record = {"size": size, "preset": pre.frame_size, "median_square_side": side, "fitted": size != pre.frame_size}
    return (dataclasses.replace(cfg, frame_size=size) if record["fitted"] else cfg), record


@dataclass
class Datasets:
    """The three splits as FrameDatasets (train augmented and background-replaced, val and test plain)."""

    train: FrameDataset
    val: FrameDataset
    test: FrameDataset


def make_datasets(cfg: TrainConfig, root: Path, splits: tuple[list[Sample], list[Sample], list[Sample]],
                  pre: PreprocessConfig, transform: SampleTransform | None, with_masks: bool, show: bool) -> Datasets:
    """The datasets, every cached frame prepared once up front: fails early on an unreadable image and
    makes epochs cheap."""
    train_s, val_s, test_s = splits
    data = Datasets(FrameDataset(root, train_s, pre, AugmentConfig() if cfg.augment else None, transform, seed=cfg.seed,
                                 with_masks=with_masks),
                    FrameDataset(root, val_s, pre), FrameDataset(root, test_s, pre))
    for ds, name in ((data.train, "train"), (data.val, "val"), (data.test, "test")):
        if ds.cached:
            for i in tqdm(range(len(ds)), desc=f"preparing {name} frames", leave=False, disable=not show):
                ds.preload(i)
    return data


@dataclass
class Loaders:
    """The shuffled train loader (and its DistributedSampler under torchrun) and the val / test loaders."""

    train: DataLoader
    val: DataLoader
    test: DataLoader
    sampler: DistributedSampler | None
    eval_batch: int


def make_loaders(cfg: TrainConfig, data: Datasets, world: int) -> Loaders:
    """Train loader shuffled by a generator seeded with cfg.seed (a DistributedSampler under torchrun), val and
    test loaders in order, batch min(cfg.batch, 16)."""
    sampler = DistributedSampler(data.train, shuffle=True, seed=cfg.seed, drop_last=True) if world > 1 else None
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data.train, batch_size=cfg.batch, shuffle=sampler is None, sampler=sampler,
                        num_workers=cfg.workers, drop_last=len(data.train) > cfg.batch, generator=gen)
    eval_batch = max(1, min(cfg.batch, 16))
    return Loaders(loader, DataLoader(data.val, batch_size=eval_batch), DataLoader(data.test, batch_size=eval_batch),
                   sampler, eval_batch)


# -------------------------------------------------------------------------------------------- optimiser


@dataclass
class Optimisation:
    """Optimiser, per-step cosine schedule, AMP gradient scaler (enabled on CUDA) and the loss weights."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp: bool
    loss: LossConfig


def make_optimisation(cfg: TrainConfig, model: MGFEN, steps_per_epoch: int, device: torch.device,
                      with_masks: bool) -> Optimisation:
    params = param_groups(model, cfg.lr, cfg.backbone_lr_scale)
    if cfg.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay,
                                                           nesterov=True)
    else:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=cfg.lr * 0.01)
    amp = device.type == "cuda"
    loss = LossConfig(part_weight=cfg.part_weight, vote_weight=cfg.vote_weight, fg_weight=cfg.fg_prior if with_masks else 0.0)
    return Optimisation(optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=amp), amp, loss)


# ------------------------------------------------------------------------------------------- one epoch


def train_epoch(net: torch.nn.Module, model: MGFEN, loaders: Loaders, opt: Optimisation, cfg: TrainConfig, epoch: int,
                device: torch.device, with_masks: bool, show: bool) -> dict:
    """One pass over the train loader; returns the epoch's metrics row (epoch, lr, train_acc, train_<loss terms>).
    `net` is the model or its DistributedDataParallel wrapper."""
    loaders.train.dataset.set_epoch(epoch)
    if loaders.sampler is not None:
        loaders.sampler.set_epoch(epoch)
    net.train()
    set_backbone_trainable(model, epoch > cfg.head_epochs)
    if cfg.freeze_bn or epoch <= cfg.head_epochs:
        freeze_batchnorm(model)
    sums: dict[str, float] = {}
    correct = seen = 0
    bar = tqdm(loaders.train, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not show)
    for batch in bar:
        image, frame, label = batch[:3]
        fg = batch[3].to(device, non_blocking=True) if with_masks else None
        image = image.to(device, non_blocking=True)
        frame = frame.to(device, non_blocking=True).float().div_(255.0)
        label = label.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=opt.amp):
            out_d = net(image, frame)
        loss, terms = mgfen_loss(out_d, label, opt.loss, fg)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        opt.scheduler.step()
        n = label.shape[0]
        for k, v in {"loss": float(loss.detach()), **terms}.items():
            sums[k] = sums.get(k, 0.0) + v * n
        correct += int((out_d["logits"].detach().argmax(1) == label).sum())
        seen += n
        bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", acc=f"{correct / seen:.3f}")
    return {"epoch": epoch, "lr": opt.optimizer.param_groups[0]["lr"], "train_acc": correct / max(seen, 1),
            **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}


# -------------------------------------------------------------------------------------------- selection


def selection_score(row: dict, select: str) -> tuple[float, float]:
    """(val metric, -val loss) of an epoch row, compared as a tuple to pick the best epoch; train accuracy
    and loss where there is no val split, and accuracy where the val AUC is undefined (one class)."""
    metric = row.get("val_auc") if select == "auc" else None
    if metric is None:
        metric = row.get("val_acc", row["train_acc"])
    return float(metric), -float(row.get("val_loss", row["train_loss"]))


@dataclass
class Selection:
    """The run's progress across epochs: best score so far and one metrics row per epoch."""

    best: tuple | None
    history: list[dict]


def select_and_save(row: dict, model: MGFEN, loaders: Loaders, opt: Optimisation, sel: Selection, cfg: TrainConfig,
                    classes: list[str], dhash: str, out: Path, device: torch.device, t0: float) -> None:
    """Validate the epoch (adds val_loss/val_acc/val_f1/val_auc and seconds to `row`), keep the best score,
    save RUN/last.pt (with the resume state) and, when improved, RUN/best.pt; rewrite metrics.json/.csv."""
    if len(loaders.val.dataset):
        vp = predict(model, loaders.val, device)
        vm = classification_report(vp.labels, vp.probs)
        row.update({"val_loss": vp.loss, "val_acc": vm["accuracy"], "val_f1": vm["f1"], "val_auc": vm["roc_auc"]})
    row["seconds"] = time.perf_counter() - t0
    sel.history.append(row)
    score = selection_score(row, cfg.select)
    improved = sel.best is None or tuple(score) > tuple(sel.best)
    if improved:
        sel.best = score
    train_cfg = dataclasses.asdict(cfg)
    resume_state = {"optimizer": opt.optimizer.state_dict(), "scheduler": opt.scheduler.state_dict(),
                    "scaler": opt.scaler.state_dict(), "best": list(sel.best), "history": sel.history}
    save_checkpoint(out / "last.pt", model, classes, metrics=row, data_hash=dhash, train_config=train_cfg,
                    epoch=row["epoch"], resume_state=resume_state)
    if improved:
        save_checkpoint(out / "best.pt", model, classes, metrics=row, data_hash=dhash, train_config=train_cfg,
                        epoch=row["epoch"])
    write_metrics(out, sel.history)


def write_metrics(out: Path, history: list[dict]) -> None:
    """RUN/metrics.json and RUN/metrics.csv: one row per epoch."""
    write_json(out / "metrics.json", history)
    fields: list[str] = []
    for row in history:
        fields += [k for k in row if k not in fields]
    with (out / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


# ------------------------------------------------------------------------------ thresholds and report


def positive_index(classes) -> int:
    """Index of the counterfeit class (the last class when none is called so), as the manifest has it."""
    return list(classes).index(POSITIVE_CLASS) if POSITIVE_CLASS in classes else len(classes) - 1


def finish(model: MGFEN, data: Datasets, loaders: Loaders, cfg: TrainConfig, index: DataIndex, out: Path,
           device: torch.device, summary: dict) -> None:
    """Reload RUN/best.pt; fit the decision thresholds on its val probabilities (bagged over resamples of the
    val groups, train.fit.thresholds), the novelty table on the train split's un-augmented frames and the
    retake gate on its photos (train.fit.gate_fit); test it; store them and the test metrics in best.pt (export
    copies them) and write RUN/report.json from `summary`, which gains best_epoch, thresholds, novelty, quality
    and test."""
    best_path = out / "best.pt"
    best_state = read_checkpoint(best_path)
    model.load_state_dict(best_state["state_dict"])
    summary["best_epoch"] = best_state["epoch"]
    positive = positive_index(index.classes)
    vp = predict(model, loaders.val, device) if len(data.val) else None
    val_y, val_p = (vp.labels == positive, vp.probs[:, positive]) if vp is not None else ([], [])
    # resampled by physical item: the val images of one group share one fate in each resample
    val_groups = [s.group for s in data.val.samples] if vp is not None else None
    fit = fit_thresholds(val_y, val_p, cfg.target_recall, cfg.target_precision, groups=val_groups, seed=cfg.seed)
    summary["thresholds"] = fit.to_dict()
    best_state["thresholds"] = dataclasses.asdict(fit.thresholds)
    best_state["threshold_fit"] = fit.to_dict()
    # The `unknown` answer: novelty table from the train split's un-augmented frames (edge_runtime.novelty).
    plain_train = make_loader(index.root, data.train.samples, data.train.preprocess, loaders.eval_batch)
    novelty = fit_model_novelty(model, plain_train, loaders.val if len(data.val) else None, device, cfg.novelty_rate,
                                [s.group for s in data.train.samples])
    best_state["novelty"] = table_to_state(novelty)
    summary["novelty"] = novelty.to_dict()
    # The scanner's retake gate, loosened to the train photos' focus and exposure (edge_runtime.quality_fit).
    best_state["quality"] = summary["quality"] = fit_quality(index.root, data.train.samples)
    if len(data.test):
        tp = predict(model, loaders.test, device)
        summary["test"] = classification_report(tp.labels, tp.probs)
        summary["test"]["loss"] = tp.loss
        summary["test"]["decisions"] = decision_metrics(tp.labels == positive, tp.probs[:, positive], fit.thresholds)
        # Keep the test metrics in best.pt too, so export/the manifest can carry them.
        best_state["metrics"] = {**best_state["metrics"], "test": summary["test"]}
    write_checkpoint(best_path, best_state)
    write_json(out / "report.json", summary)
