"""Checkpoints: one torch.save dict that carries everything needed to rebuild, evaluate and export a model
(architecture, class names, preprocessing inside model_config, thresholds, metrics, data hash, train config).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edge_runtime.roi import Thresholds
from train.errors import CheckpointError, ConfigError
from train.model.mgfen import MGFEN, ModelConfig, build_model

FORMAT = "mgfen-checkpoint"
VERSION = 1


def save_checkpoint(
    path: Path,
    model: MGFEN,
    classes: list[str],
    *,
    thresholds: Thresholds = Thresholds(),
    metrics: dict | None = None,
    data_hash: str = "",
    train_config: dict | None = None,
    epoch: int = 0,
    resume_state: dict | None = None,
) -> None:
    """Write the checkpoint atomically (tmp file + rename). resume_state: optimizer/scheduler/scaler
    states for --resume (kept out of best.pt to keep it small)."""
    data = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.cfg.to_dict(),
        "classes": list(classes),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "thresholds": {"genuine_at": thresholds.genuine_at, "counterfeit_at": thresholds.counterfeit_at},
        "metrics": metrics or {},
        "data_hash": data_hash,
        "train_config": train_config or {},
        "epoch": int(epoch),
    }
    if resume_state is not None:
        data["resume"] = resume_state
    write_checkpoint(path, data)


def write_checkpoint(path: str | Path, data: dict) -> None:
    """torch.save `data` (a checkpoint dict, as save_checkpoint builds and read_checkpoint returns) to
    `path` through a temporary file, so a crash never leaves half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(data, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict, validated: CheckpointError when the file is not an MGFEN checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an MGFEN checkpoint (no format {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r} is not supported (need {VERSION})")
    for key in ("model_config", "classes", "state_dict"):
        if key not in data:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    return data


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MGFEN, dict]:
    """Rebuild the model from a checkpoint: (model in eval mode, the checkpoint dict without state_dict).

    CheckpointError for a file that is not a checkpoint, or whose weights belong to another
    architecture than its model_config describes.
    """
    data = read_checkpoint(path, map_location)
    try:
        cfg = ModelConfig.from_dict(data["model_config"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad model config ({exc})") from None
    model = build_model(cfg, pretrained=None)
    check_architecture(model, data["state_dict"], str(path))
    model.load_state_dict(data["state_dict"], strict=True)
    model.eval()
    info = {k: v for k, v in data.items() if k not in ("state_dict", "resume")}
    info["model_config"] = cfg
    return model, info


def check_architecture(model: MGFEN, state: dict, name: str) -> None:
    """CheckpointError unless `state` has exactly the model's keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise CheckpointError(
            f"{name}: checkpoint of another architecture ({len(missing)} missing, {len(extra)} unexpected, "
            f"{len(shapes)} mis-shaped tensors, e.g. {first!r})"
        )
