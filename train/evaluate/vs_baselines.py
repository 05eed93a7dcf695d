"""`mgfen-eval --baselines`: the shortcut baselines and the linear probe fitted on the checkpoint's train
split and scored on the evaluated split, next to the checkpoint's own scores, with a paired comparison.

    result = baselines_vs_checkpoint(Path("runs/edge/best.pt"), Path("data"), split="test")
    print("\\n".join(format_baselines(result)))
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from train.audit.baselines import DEFAULT_BATCH, best_baseline, default_baselines, extract_features, fit_predict
from train.data.folders import DataIndex, Sample, select_split
from train.errors import ConfigError, DataError
from train.evaluate.resample import N_BOOT, paired_difference, score_with_interval


def checkpoint_scores(ckpt: Path, data: Path, split: str, device: str = "cpu", batch: int = 8, seed: int = 0,
                      progress: bool = False) -> tuple[DataIndex, list[Sample], np.ndarray]:
    """Run a two-class checkpoint over one split: (index, the split's samples, P(class 1) [N] float64).
    The split is chosen exactly as mgfen-eval chooses it (train.data.folders.select_split)."""
    from train.evaluate.predict import make_loader, predict, resolve_device
    from train.model.checkpoint import load_checkpoint

    dev = resolve_device(device)
    model, info = load_checkpoint(ckpt, map_location="cpu")
    if len(info["classes"]) != 2:
        raise ConfigError(f"--baselines needs a two-class checkpoint, {ckpt} has {len(info['classes'])} classes")
    index, chosen = select_split(data, split, list(info["classes"]), seed)
    pred = predict(model.to(dev), make_loader(index.root, chosen, model.cfg.preprocess, batch), dev, progress=progress)
    return index, chosen, pred.probs[:, 1].astype(np.float64)


def check_split(split: str) -> None:
    """ConfigError unless `split` is one the baselines can be scored on (not train, which fits them)."""
    if split not in ("val", "test"):
        raise ConfigError(f"--baselines needs --split val or test (the baselines are fitted on train), got {split!r}")


def baselines_vs_checkpoint(ckpt: Path, data: Path, split: str = "test", probe_sizes: Sequence[int] = (),
                            device: str = "cpu", batch: int = 8, seed: int = 0, n_boot: int = N_BOOT,
                            progress: Callable[[int], None] | None = None) -> dict:
    """Fit every default baseline on the train split, score it and the checkpoint on `split` (val or
    test), and compare: each row has accuracy / ROC-AUC with 95% group-bootstrap intervals and the paired
    difference checkpoint minus baseline. `clears`: the checkpoint's AUC is above the best baseline's;
    `clears_significantly`: the paired AUC difference's interval is above 0."""
    check_split(split)
    index, test, p_ckpt = checkpoint_scores(ckpt, data, split, device, batch, seed)
    train = index.split("train")
    y_train = np.array([s.label for s in train], np.int64)
    if len(set(y_train.tolist())) < 2:
        raise DataError(f"{data}: the train split needs both classes to fit the baselines")
    y = np.array([s.label for s in test], np.int64)
    groups = [s.group for s in test]
    feats = extract_features(index.root, [s.path for s in train + test], probe_sizes, device, DEFAULT_BATCH,
                             progress=progress)
    f_train, f_test = feats.subset(np.arange(len(train))), feats.subset(np.arange(len(train), len(feats.paths)))
    rows = []
    for b in default_baselines(probe_sizes):
        p = fit_predict(b, f_train, y_train, f_test)
        rows.append({"name": b.name, "family": b.family, "description": b.description,
                     **score_with_interval(y, p, groups, n_boot, seed).to_dict(),
                     "checkpoint_minus_baseline": paired_difference(y, p_ckpt, p, groups, n_boot, seed)})
    own = score_with_interval(y, p_ckpt, groups, n_boot, seed).to_dict()
    best = best_baseline(rows)
    clears = best is None or (own["roc_auc"] is not None and own["roc_auc"] > best["roc_auc"])
    ci = best["checkpoint_minus_baseline"]["roc_auc_ci"] if best is not None else None
    return {"split": split, "train_images": len(train), "classes": list(index.classes), "checkpoint": own,
            "baselines": rows, "best_baseline": best["name"] if best else None, "clears": bool(clears),
            "clears_significantly": bool(clears and ci is not None and ci[0] > 0),
            "settings": {"probe_sizes": list(probe_sizes), "seed": seed, "n_boot": n_boot}}


def _ci(value: float | None, ci: list | None, pct: bool = False, sign: bool = False) -> str:
    if value is None:
        return "-"
    k = 100.0 if pct else 1.0
    f = ("{:+.1f}" if sign else "{:.1f}") if pct else ("{:+.3f}" if sign else "{:.3f}")
    return f.format(k * value) + (f" [{f.format(k * ci[0])}, {f.format(k * ci[1])}]" if ci else "")


def format_baselines(result: dict) -> list[str]:
    """Lines for the terminal: one row per model, then whether the checkpoint clears the best baseline."""
    own = result["checkpoint"]
    head = (f"baselines: fitted on train ({result['train_images']} images), scored on {result['split']} "
            f"({own['n']} images, {own['groups']} groups); 95% group-bootstrap intervals")
    table = [("checkpoint", _ci(own["accuracy"], own["accuracy_ci"], True), _ci(own["roc_auc"], own["roc_auc_ci"]), "")]
    for r in result["baselines"]:
        d = r["checkpoint_minus_baseline"]
        table.append((r["description"], _ci(r["accuracy"], r["accuracy_ci"], True), _ci(r["roc_auc"], r["roc_auc_ci"]),
                      _ci(d["roc_auc"], d["roc_auc_ci"], sign=True)))
    header = ("model", "accuracy %", "ROC-AUC", "checkpoint minus baseline (AUC)")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(4)]
    lines = [head] + ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *table]]
    best = next((r for r in result["baselines"] if r["name"] == result["best_baseline"]), None)
    if best is None:
        return lines + ["verdict: no baseline has an ROC-AUC on this split"]
    target = f"the best baseline ({best['description']}, AUC {best['roc_auc']:.3f})"
    if not result["clears"]:
        return lines + [f"verdict: the checkpoint does NOT clear {target}"]
    how = "significantly" if result["clears_significantly"] else "but not significantly (the paired interval includes 0)"
    return lines + [f"verdict: the checkpoint clears {target}, {how}"]
