"""Training: `train(TrainConfig) -> dict`. Cosine-annealed training with best/last checkpoints, per-epoch
metrics (CSV + JSON), the resolved config beside them, AMP on CUDA, DistributedDataParallel under torchrun,
and the stability protocol (N seeded group-aware 7:2:1 splits, mean +- std: the paper's Table 4).

RUN/ after a run: config.json, metrics.csv, metrics.json, best.pt, last.pt, report.json
(with --stability N: RUN/split{i}/... and RUN/stability.json, RUN/stability.md).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from train.data.dataset import SampleTransform
from train.data.folders import DataIndex, data_hash, index_folder, split_samples
from train.enhance.blend import background_replacer
from train.errors import ConfigError, DataError
from train.evaluate.predict import resolve_device
from train.fit import steps
from train.fit.config import TrainConfig
from train.model.checkpoint import check_architecture, read_checkpoint
from train.model.mgfen import ModelConfig, build_model

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


# --------------------------------------------------------------------------------------------- train


def train(config: TrainConfig, sample_transform: SampleTransform | None = None) -> dict:
    """Train (and test) one model, or `config.stability` models on re-drawn splits. Returns a summary dict.

    sample_transform: optional per-sample transform of the source image (background replacement hook),
    see train.data.dataset.SampleTransform. Raises MgfenError subclasses for bad data/config.
    """
    cfg = config.resolved()
    if sample_transform is None and cfg.bg_replace > 0 and (Path(cfg.data) / "masks").is_dir():
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
        steps.write_json(out / "stability.json", result)
        lines = ["| split | seed | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
        for r in runs:
            lines.append(f"| {r['split']} | {r['seed']} | " + " | ".join("-" if r[k] is None else f"{100 * r[k]:.2f}" for k in keys) + " |")
        lines.append("| mean +- std | | " + " | ".join(
            "-" if table[k]["mean"] is None else f"{100 * table[k]['mean']:.2f} +- {100 * table[k]['std']:.2f}" for k in keys) + " |")
        (out / "stability.md").write_text("\n".join(lines) + "\n")
    return result


def _train_once(cfg: TrainConfig, index: DataIndex, out: Path, device: torch.device, transform) -> dict:
    """One model on the index's splits: data, model, optimiser, the epochs (each validated, the best kept),
    then thresholds, novelty table, retake gate and test on the best epoch (train.fit.steps, in that order)."""
    rank, world = _dist_info()
    main = rank == 0
    show = main and cfg.progress
    _seed_everything(cfg.seed)
    train_s, val_s, test_s = index.split("train"), index.split("val"), index.split("test")
    if len({s.label for s in train_s}) < 2:
        raise DataError(f"{index.root}: the training split needs images of at least two classes")
    cfg, frame_info = steps.fit_frame(cfg, index, train_s)
    model_cfg = cfg.model_config(len(index.classes))
    out.mkdir(parents=True, exist_ok=True)
    dhash = data_hash(index.root, index.samples)
    background = background_usage(cfg, index.root, model_cfg.use_parts, transform)
    with_masks = background["fg_prior"] > 0
    data = steps.make_datasets(cfg, index.root, (train_s, val_s, test_s), model_cfg.preprocess, transform, with_masks, show)

    model = build_model(model_cfg, pretrained=cfg.pretrained).to(device)
    loaders = steps.make_loaders(cfg, data, world)
    if world > 1 and cfg.head_epochs:
        raise ConfigError("--head-epochs is not supported under torchrun (DDP needs a fixed set of trained parameters)")
    opt = steps.make_optimisation(cfg, model, len(loaders.train), device, with_masks)
    sel = steps.Selection(None, [])
    start_epoch = 1
    if cfg.resume:
        start_epoch, sel.best, sel.history = _resume(out / "last.pt", model, model_cfg, opt)
    net: torch.nn.Module = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=not model_cfg.use_parts)

    classes = list(index.classes)
    if main:
        steps.write_json(out / "config.json", {
            "train": dataclasses.asdict(cfg), "model": model_cfg.to_dict(), "classes": classes,
            "loss": dataclasses.asdict(opt.loss), "data_hash": dhash, "world_size": world,
            "counts": {"train": len(train_s), "val": len(val_s), "test": len(test_s)},
            "assigned_split": list(index.assigned)})
    t_start = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        row = steps.train_epoch(net, model, loaders, opt, cfg, epoch, device, with_masks, show)
        if main:
            steps.select_and_save(row, model, loaders, opt, sel, cfg, classes, dhash, out, device, t0)
            if cfg.progress:
                val = f" val_acc {row['val_acc']:.3f} val_loss {row['val_loss']:.3f}" if "val_acc" in row else ""
                tqdm.write(f"epoch {epoch}: loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}{val} ({row['seconds']:.1f} s)")
        if world > 1:
            dist.barrier()

    summary = {"out": str(out), "epochs": cfg.epochs, "train_seconds": time.perf_counter() - t_start,
               "classes": classes, "data_hash": dhash, "best_epoch": None, "test": {}, "background": background,
               "frame": frame_info, "split_note": index.split_note()}
    if main:
        steps.finish(model, data, loaders, cfg, index, out, device, summary)
    return summary


def _resume(path: Path, model, model_cfg: ModelConfig, opt: steps.Optimisation) -> tuple[int, tuple | None, list]:
    """Restore a run from RUN/last.pt: (next epoch, best score, history)."""
    data = read_checkpoint(path)
    if data["model_config"] != model_cfg.to_dict():
        raise ConfigError(f"{path}: --resume with a different model configuration than the checkpoint's")
    check_architecture(model, data["state_dict"], str(path))
    model.load_state_dict(data["state_dict"])
    state = data.get("resume")
    if not state:
        raise ConfigError(f"{path}: checkpoint holds no optimizer state to resume from")
    opt.optimizer.load_state_dict(state["optimizer"])
    opt.scheduler.load_state_dict(state["scheduler"])
    opt.scaler.load_state_dict(state["scaler"])
    return int(data["epoch"]) + 1, tuple(state["best"]), list(state["history"])

