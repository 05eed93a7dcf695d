"""Training: `train(TrainConfig) -> dict`. Cosine-annealed training with best/last checkpoints, per-epoch
metrics (CSV + JSON), the resolved config beside them, AMP on CUDA, DistributedDataParallel under torchrun,
and the stability protocol (N seeded group-aware 7:2:1 splits, mean +- std: the paper's Table 4).

RUN/ after a run: config.json, metrics.csv, metrics.json, best.pt, last.pt, report.json
(with --stability N: RUN/split{i}/... and RUN/stability.json, RUN/stability.md).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from edge_runtime.names import POSITIVE_CLASS
from edge_runtime.novelty import DEFAULT_TARGET_RATE, check_rate
from train.checkpoint import check_architecture, read_checkpoint, save_checkpoint
from train.data import AugmentConfig, DataIndex, FrameDataset, SampleTransform, data_hash, index_folder, split_samples
from train.errors import ConfigError, DataError
from train.evaluate import predict, resolve_device
from train.finetune import freeze_batchnorm, param_groups, set_backbone_trainable
from train.frame_fit import fit_frame_size, median_square_side
from train.loss import LossConfig, mgfen_loss
from train.metrics import classification_report
from train.model import PRESETS, ModelConfig, build_model, preset
from train.novelty_fit import fit_model_novelty, table_to_state
from train.thresholds import (DEFAULT_TARGET_PRECISION, DEFAULT_TARGET_RECALL, check_targets, decision_metrics,
                              fit_thresholds)

# Training defaults per preset (the model side lives in train.model.PRESETS).
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
    fit_frame: bool = True  # with no frame_size: shrink the preset's frame to photos smaller than it (train.frame_fit)
    global_size: int | None = None
    crop_size: int | None = None
    k: int | None = None
    stability: int = 0
    backbone_lr_scale: float | None = None  # backbone lr = lr * this (train.finetune.param_groups)
    head_epochs: int | None = None  # first epochs train the heads only, on frozen features (linear probe, then fine-tune)
    freeze_bn: bool | None = None  # backbone BatchNorm statistics kept at their pretrained values
    select: str | None = None  # best epoch by val "accuracy" or "auc" (SELECT_METRICS)
    workers: int = 0
    progress: bool = True
    bg_replace: float = 0.5  # probability of online background replacement (needs DATA/masks); 0 = off
    backgrounds: str | None = None  # background photo folder; None = the procedural families
    blend: str = "alpha"
    fg_prior: float = 1.0  # weight of the heatmap foreground prior (train.loss); used where DATA/masks exist
    target_recall: float = DEFAULT_TARGET_RECALL  # val counterfeit recall the fitted genuine_at keeps (train.thresholds)
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
            raise ConfigError(str(exc)) from None
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
        sizes = {n: getattr(self, n) for n in ("frame_size", "global_size", "crop_size") if getattr(self, n) is not None}
        if sizes:
            try:
                overrides["preprocess"] = dataclasses.replace(PRESETS[self.preset].preprocess, **sizes)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return preset(self.preset, **overrides)


# ------------------------------------------------------------------------------------------ helpers


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) when not distributed."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _init_distributed(device: torch.device) -> tuple[int, int]:
    rank, world = _dist_info()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return rank, world


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def _make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


# --------------------------------------------------------------------------------------------- train


def train(config: TrainConfig, sample_transform: SampleTransform | None = None) -> dict:
    """Train (and test) one model, or `config.stability` models on re-drawn splits. Returns a summary dict.

    sample_transform: optional per-sample transform of the source image (background replacement hook),
    see train.data.SampleTransform. Raises MgfenError subclasses for bad data/config.
    """
    cfg = config.resolved()
    if sample_transform is None and cfg.bg_replace > 0 and (Path(cfg.data) / "masks").is_dir():
        from train.bg_cli import background_replacer

        sample_transform = background_replacer(cfg.bg_replace, cfg.backgrounds, cfg.blend)
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    index = index_folder(cfg.data, seed=cfg.seed)
    out = Path(cfg.out)
    rank, world = _init_distributed(device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    try:
        if cfg.stability:
            return _stability(cfg, index, out, device, sample_transform)
        return _train_once(cfg, index, out, device, sample_transform)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def background_usage(cfg: TrainConfig, root: Path, use_parts: bool, transform) -> dict:
    """What background replacement and the foreground prior actually do in this run (report.json's
    "background"): both need DATA/masks; without that folder they are OFF whatever was asked, and `off`
    names them with the reason."""
    masks = (Path(root) / "masks").is_dir()
    fg_prior = cfg.fg_prior if masks and use_parts else 0.0
    off = [name for name, asked in (("background replacement", cfg.bg_replace > 0 and transform is None),
                                    ("foreground prior", cfg.fg_prior > 0 and use_parts and not masks)) if asked]
    return {"masks": masks, "bg_replace": cfg.bg_replace if transform is not None else 0.0,
            "transform": None if transform is None else repr(transform), "fg_prior": fg_prior, "off": off,
            "off_reason": f"no masks/ folder in {root} (make one with `mgfen-data masks`)" if off and not masks else None}


def _stability(cfg: TrainConfig, index: DataIndex, out: Path, device: torch.device, transform) -> dict:
    """Train on `cfg.stability` group-aware 7:2:1 splits drawn with seeds seed, seed+1, ...; mean +- std."""
    rank, _ = _dist_info()
    runs = []
    keys = ("accuracy", "precision", "recall", "f1", "roc_auc")
    for i in range(cfg.stability):
        seed = cfg.seed + i
        resplit = DataIndex(index.root, index.classes, tuple(sorted(split_samples(index.samples, seed), key=lambda s: s.path)))
        summary = _train_once(dataclasses.replace(cfg, seed=seed, stability=0), resplit, out / f"split{i}", device, transform)
        runs.append({"split": i, "seed": seed, **{k: summary["test"].get(k) for k in keys}})
        background, frame = summary["background"], summary["frame"]
    table = {}
    for k in keys:
        values = [r[k] for r in runs if r[k] is not None]
        table[k] = {"mean": float(np.mean(values)) if values else None, "std": float(np.std(values)) if values else None}
    result = {"splits": runs, "summary": table, "out": str(out), "background": background, "frame": frame}
    if rank == 0:
        _write_json(out / "stability.json", result)
        lines = ["| split | seed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        for r in runs:
            lines.append(f"| {r['split']} | {r['seed']} | " + " | ".join("-" if r[k] is None else f"{100 * r[k]:.2f}" for k in keys) + " |")
        lines.append("| mean +- std | | " + " | ".join(
            "-" if table[k]["mean"] is None else f"{100 * table[k]['mean']:.2f} +- {100 * table[k]['std']:.2f}" for k in keys) + " |")
        (out / "stability.md").write_text("\n".join(lines) + "\n")
    return result


def _train_once(cfg: TrainConfig, index: DataIndex, out: Path, device: torch.device, transform) -> dict:
    rank, world = _dist_info()
    main = rank == 0
    _seed_everything(cfg.seed)
    train_s, val_s, test_s = index.split("train"), index.split("val"), index.split("test")
    if len({s.label for s in train_s}) < 2:
        raise DataError(f"{index.root}: the training split needs images of at least two classes")
    cfg, frame_info = _fit_frame(cfg, index, train_s)
    model_cfg = cfg.model_config(len(index.classes))
    pre = model_cfg.preprocess
    out.mkdir(parents=True, exist_ok=True)
    dhash = data_hash(index.root, index.samples)

    background = background_usage(cfg, index.root, model_cfg.use_parts, transform)
    with_masks = background["fg_prior"] > 0
    train_ds = FrameDataset(index.root, train_s, pre, AugmentConfig() if cfg.augment else None, transform, seed=cfg.seed,
                            with_masks=with_masks)
    val_ds = FrameDataset(index.root, val_s, pre)
    test_ds = FrameDataset(index.root, test_s, pre)
    # Prepare every frame once up front: fails early on an unreadable image and makes epochs cheap.
    for ds, name in ((train_ds, "train"), (val_ds, "val"), (test_ds, "test")):
        if ds.cached:
            for i in tqdm(range(len(ds)), desc=f"preparing {name} frames", leave=False, disable=not (main and cfg.progress)):
                ds.preload(i)

    model = build_model(model_cfg, pretrained=cfg.pretrained).to(device)
    sampler = DistributedSampler(train_ds, shuffle=True, seed=cfg.seed, drop_last=True) if world > 1 else None
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(train_ds, batch_size=cfg.batch, shuffle=sampler is None, sampler=sampler,
                        num_workers=cfg.workers, drop_last=len(train_ds) > cfg.batch, generator=gen)
    eval_batch = max(1, min(cfg.batch, 16))
    val_loader = DataLoader(val_ds, batch_size=eval_batch)
    test_loader = DataLoader(test_ds, batch_size=eval_batch)

    if world > 1 and cfg.head_epochs:
        raise ConfigError("--head-epochs is not supported under torchrun (DDP needs a fixed set of trained parameters)")
    optimizer = _make_optimizer(cfg.optimizer, param_groups(model, cfg.lr, cfg.backbone_lr_scale), cfg.lr, cfg.weight_decay)
    steps = cfg.epochs * max(1, len(loader))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=cfg.lr * 0.01)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_cfg = LossConfig(part_weight=cfg.part_weight, vote_weight=cfg.vote_weight, fg_weight=cfg.fg_prior if with_masks else 0.0)

    start_epoch, best, history = 1, None, []
    last_path, best_path = out / "last.pt", out / "best.pt"
    if cfg.resume:
        start_epoch, best, history = _resume(last_path, model, model_cfg, optimizer, scheduler, scaler)
    net: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=not model_cfg.use_parts)

    resolved = {"train": dataclasses.asdict(cfg), "model": model_cfg.to_dict(), "classes": list(index.classes),
                "loss": dataclasses.asdict(loss_cfg), "data_hash": dhash, "world_size": world,
                "counts": {"train": len(train_s), "val": len(val_s), "test": len(test_s)},
                "assigned_split": list(index.assigned)}
    if main:
        _write_json(out / "config.json", resolved)
    train_cfg_dict = dataclasses.asdict(cfg)
    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        set_backbone_trainable(model, epoch > cfg.head_epochs)
        if cfg.freeze_bn or epoch <= cfg.head_epochs:
            freeze_batchnorm(model)
        sums: dict[str, float] = {}
        correct = seen = 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=not (main and cfg.progress))
        for batch in bar:
            image, frame, label = batch[:3]
            fg = batch[3].to(device, non_blocking=True) if with_masks else None
            image = image.to(device, non_blocking=True)
            frame = frame.to(device, non_blocking=True).float().div_(255.0)
            label = label.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out_d = net(image, frame)
            loss, terms = mgfen_loss(out_d, label, loss_cfg, fg)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = label.shape[0]
            for k, v in {"loss": float(loss.detach()), **terms}.items():
                sums[k] = sums.get(k, 0.0) + v * n
            correct += int((out_d["logits"].detach().argmax(1) == label).sum())
            seen += n
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", acc=f"{correct / seen:.3f}")
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_acc": correct / max(seen, 1),
               **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}
        if main:
            if len(val_ds):
                vp = predict(model, val_loader, device)
                vm = classification_report(vp.labels, vp.probs)
                row.update({"val_loss": vp.loss, "val_acc": vm["accuracy"], "val_f1": vm["f1"], "val_auc": vm["roc_auc"]})
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            score = _selection_score(row, cfg.select)
            improved = best is None or tuple(score) > tuple(best)
            if improved:
                best = score
            resume_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "scaler": scaler.state_dict(), "best": list(best), "history": history}
            save_checkpoint(last_path, model, list(index.classes), metrics=row, data_hash=dhash,
                            train_config=train_cfg_dict, epoch=epoch, resume_state=resume_state)
            if improved:
                save_checkpoint(best_path, model, list(index.classes), metrics=row, data_hash=dhash,
                                train_config=train_cfg_dict, epoch=epoch)
            _write_metrics(out, history)
            if cfg.progress:
                val = f" val_acc {row['val_acc']:.3f} val_loss {row['val_loss']:.3f}" if "val_acc" in row else ""
                tqdm.write(f"epoch {epoch}: loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}{val} ({row['seconds']:.1f} s)")
        if world > 1:
            dist.barrier()
    train_seconds = time.perf_counter() - t_start

    summary = {"out": str(out), "epochs": cfg.epochs, "train_seconds": train_seconds, "classes": list(index.classes),
               "data_hash": dhash, "best_epoch": None, "test": {}, "background": background, "frame": frame_info,
               "split_note": index.split_note()}
    if main:
        best_state = torch.load(best_path, map_location="cpu", weights_only=False)
        model.load_state_dict(best_state["state_dict"])
        summary["best_epoch"] = best_state["epoch"]
        # Decision thresholds from the best model's val probabilities, kept in best.pt (export copies them).
        positive = _positive_index(index.classes)
        vp = predict(model, val_loader, device) if len(val_ds) else None
        val_y, val_p = (vp.labels == positive, vp.probs[:, positive]) if vp is not None else ([], [])
        fit = fit_thresholds(val_y, val_p, cfg.target_recall, cfg.target_precision)
        summary["thresholds"] = fit.to_dict()
        best_state["thresholds"] = dataclasses.asdict(fit.thresholds)
        best_state["threshold_fit"] = fit.to_dict()
        # The `unknown` answer: novelty table from the train split's un-augmented frames (edge_runtime.novelty).
        plain_train = DataLoader(FrameDataset(index.root, train_s, pre), batch_size=eval_batch)
        novelty = fit_model_novelty(model, plain_train, val_loader if len(val_ds) else None, device, cfg.novelty_rate)
        best_state["novelty"] = table_to_state(novelty)
        summary["novelty"] = novelty.to_dict()
        if len(test_ds):
            tp = predict(model, test_loader, device)
            summary["test"] = classification_report(tp.labels, tp.probs)
            summary["test"]["loss"] = tp.loss
            summary["test"]["decisions"] = decision_metrics(tp.labels == positive, tp.probs[:, positive], fit.thresholds)
            # Keep the test metrics in best.pt too, so export/the manifest can carry them.
            best_state["metrics"] = {**best_state["metrics"], "test": summary["test"]}
        tmp = best_path.with_name(best_path.name + ".tmp")
        torch.save(best_state, tmp)
        tmp.replace(best_path)
        _write_json(out / "report.json", summary)
    return summary


def _fit_frame(cfg: TrainConfig, index: DataIndex, train_s: list) -> tuple[TrainConfig, dict]:
    """(cfg with frame_size set to the fitted frame, report.json's "frame" record). The frame is fitted to
    the train split's median square side (train.frame_fit) unless --frame-size was given or fit_frame is off."""
    pre = cfg.model_config(len(index.classes)).preprocess
    if cfg.frame_size is not None or not cfg.fit_frame:
        return cfg, {"size": pre.frame_size, "preset": PRESETS[cfg.preset].preprocess.frame_size, "fitted": False}
    side = median_square_side(index.root, train_s)
    size = fit_frame_size(side, pre.frame_size, pre.global_size, pre.crop_size)
    record = {"size": size, "preset": pre.frame_size, "median_square_side": side, "fitted": size != pre.frame_size}
    return (dataclasses.replace(cfg, frame_size=size) if record["fitted"] else cfg), record


def _positive_index(classes) -> int:
    """Index of the counterfeit class (the last class when none is called so), as the manifest has it."""
    return list(classes).index(POSITIVE_CLASS) if POSITIVE_CLASS in classes else len(classes) - 1


def _selection_score(row: dict, select: str) -> tuple[float, float]:
    """(val metric, -val loss) of an epoch row, compared as a tuple to pick the best epoch; train accuracy
    and loss where there is no val split, and accuracy where the val AUC is undefined (one class)."""
    metric = row.get("val_auc") if select == "auc" else None
    if metric is None:
        metric = row.get("val_acc", row["train_acc"])
    return float(metric), -float(row.get("val_loss", row["train_loss"]))


def _write_metrics(out: Path, history: list[dict]) -> None:
    _write_json(out / "metrics.json", history)
    fields: list[str] = []
    for row in history:
        fields += [k for k in row if k not in fields]
    with (out / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(history)


def _resume(path: Path, model, model_cfg: ModelConfig, optimizer, scheduler, scaler) -> tuple[int, tuple | None, list]:
    """Restore a run from RUN/last.pt: (next epoch, best score, history)."""
    data = read_checkpoint(path)
    if data["model_config"] != model_cfg.to_dict():
        raise ConfigError(f"{path}: --resume with a different model configuration than the checkpoint's")
    check_architecture(model, data["state_dict"], str(path))
    model.load_state_dict(data["state_dict"])
    state = data.get("resume")
    if not state:
        raise ConfigError(f"{path}: checkpoint holds no optimizer state to resume from")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    return int(data["epoch"]) + 1, tuple(state["best"]), list(state["history"])

