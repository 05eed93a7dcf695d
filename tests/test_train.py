"""Training: data discovery and group-aware splits, one tiny run end to end (files, checkpoint, resume),
stability protocol, DDP with gloo on two CPU processes, and one-line errors for bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from train.checkpoint import load_checkpoint
from train.data import FrameDataset, index_folder, split_samples
from train.errors import DataError
from train.train_cli import main as train_main
from train.trainer import TrainConfig, train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY_ARGS = ["--backbone", "resnet18", "--pretrained", "none", "--frame-size", "128", "--global-size", "64",
             "--crop-size", "32", "--batch", "4", "--threads", "1"]


def _image(rng: np.random.Generator, label: int, size: int = 128) -> np.ndarray:
    """Grey tag on a coloured background; counterfeit (1) adds fine pixel noise inside the tag."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = rng.integers(40, 200, 3)
    tag = np.full((size // 2, size // 2, 3), 170, np.uint8)
    if label:
        tag = np.clip(tag.astype(int) + rng.integers(-40, 41, tag.shape), 0, 255).astype(np.uint8)
    o = size // 4
    img[o : o + size // 2, o : o + size // 2] = tag
    return img


def make_data(root: Path, per: int = 4, split: bool = True, groups: int = 1) -> Path:
    """root/{split}/{class}/itemG_S.png (or root/{class}/... without splits), `per` items per class."""
    rng = np.random.default_rng(0)
    rows = []
    for label, name in enumerate(("genuine", "counterfeit")):
        for i in range(per * (3 if not split else 1)):
            for sp in (("train", "val", "test") if split else ("",)):
                for shot in range(groups):
                    rel = Path(sp, name, f"{name}{i:03d}_{shot}.png") if sp else Path(name, f"{name}{i:03d}_{shot}.png")
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(root / rel), _image(rng, label))
                    rows.append(rel.as_posix())
    return root


def test_index_and_dataset_shapes(tmp_path):
    data = make_data(tmp_path / "d")
    index = index_folder(data)
    assert index.classes == ("genuine", "counterfeit")
    assert {s.split for s in index.samples} == {"train", "val", "test"}
    from train.model import preset

    pre = preset("edge").preprocess.__class__(frame_size=128, global_size=64, crop_size=32)
    ds = FrameDataset(data, index.split("train"), pre)
    image, frame, label = ds[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert frame.shape == (3, 128, 128) and frame.dtype == torch.uint8 and label in (0, 1)


def test_group_aware_split_is_seeded_and_keeps_groups_whole(tmp_path):
    data = make_data(tmp_path / "u", per=10, split=False, groups=3)  # 30 items x 3 shots per class
    index = index_folder(data, seed=5)
    by_group = {}
    for s in index.samples:
        by_group.setdefault(s.group, set()).add(s.split)
    assert all(len(v) == 1 for v in by_group.values())
    counts = {sp: len(index.split(sp)) for sp in ("train", "val", "test")}
    assert counts == {"train": 126, "val": 36, "test": 18}  # 7:2:1 of 180 images, whole groups of 3
    assert index_folder(data, seed=5).samples == index.samples
    assert split_samples(index.samples, 6) != list(index.samples)


def test_sample_transform_hook_sees_source_and_mask(tmp_path):
    data = make_data(tmp_path / "d")
    index = index_folder(data)
    sample = index.split("train")[0]
    mask_path = data / "masks" / sample.path
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(mask_path), np.full((128, 128), 255, np.uint8))
    seen = []

    def hook(bgr, mask, rng):
        seen.append((bgr.shape, None if mask is None else int(mask.max())))
        return np.zeros_like(bgr)

    from edge_runtime.preprocess import PreprocessConfig

    ds = FrameDataset(data, [sample], PreprocessConfig(frame_size=128, global_size=64, crop_size=32, ace=False, brightness_target=None), sample_transform=hook)
    _, frame, _ = ds[0]
    assert seen == [((128, 128, 3), 255)] and int(frame.max()) == 0 and ds.cache is None


def test_train_run_writes_everything_and_resumes(tmp_path):
    data = make_data(tmp_path / "d")
    run = tmp_path / "run"
    result = CliRunner().invoke(train_main, ["--data", str(data), "--out", str(run), "--epochs", "1", *TINY_ARGS])
    assert result.exit_code == 0, result.output
    for name in ("best.pt", "last.pt", "config.json", "metrics.csv", "metrics.json", "report.json"):
        assert (run / name).is_file(), name
    model, info = load_checkpoint(run / "best.pt")
    assert info["classes"] == ["genuine", "counterfeit"] and info["epoch"] == 1
    assert info["model_config"].preprocess.frame_size == 128 and info["data_hash"]
    assert "test" in info["metrics"] and "val_acc" in info["metrics"]
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["backbone"] == "resnet18" and config["train"]["epochs"] == 1
    # resume to epoch 2 from last.pt: the history grows, the schedule continues
    result = CliRunner().invoke(train_main, ["--data", str(data), "--out", str(run), "--epochs", "2", "--resume", *TINY_ARGS])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_stability_table(tmp_path):
    data = make_data(tmp_path / "u", per=4, split=False)
    summary = train(TrainConfig(data=str(data), out=str(tmp_path / "s"), backbone="resnet18", pretrained="none", epochs=1,
                                batch=4, threads=1, frame_size=128, global_size=64, crop_size=32, stability=2,
                                use_parts=False, progress=False))
    assert [r["seed"] for r in summary["splits"]] == [0, 1]
    assert set(summary["summary"]["accuracy"]) == {"mean", "std"}
    assert (tmp_path / "s" / "stability.md").read_text().count("\n") == 5
    assert (tmp_path / "s" / "split1" / "best.pt").is_file()


def test_ddp_two_processes_gloo(tmp_path):
    data = make_data(tmp_path / "d")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "train.train_cli", "--data", str(data), "--out", str(tmp_path / "ddp"), "--epochs", "1", *TINY_ARGS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert config["world_size"] == 2
    assert (tmp_path / "ddp" / "best.pt").is_file()


@pytest.mark.parametrize("case", ["empty", "one_class", "unreadable", "cuda", "missing"])
def test_bad_input_is_one_line_error(tmp_path, case):
    data = tmp_path / "d"
    data.mkdir()
    extra: list[str] = []
    if case == "one_class":
        (data / "genuine").mkdir()
        cv2.imwrite(str(data / "genuine" / "a_0.png"), _image(np.random.default_rng(0), 0))
    elif case == "unreadable":
        make_data(data)
        (data / "train" / "genuine" / "broken_0.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        make_data(data)
        extra = ["--device", "cuda"]
    elif case == "missing":
        data = tmp_path / "nope"
    result = CliRunner().invoke(train_main, ["--data", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", *TINY_ARGS, *extra])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    # progress bars (stderr) may precede it; the error itself is one line, the last one
    assert result.output.count("Error:") == 1, result.output
    message = [result.output.strip().splitlines()[-1].split("Error:")[-1].strip()]
    expected = {"empty": "no images", "one_class": "only one class", "unreadable": "broken_0.png",
                "cuda": "CUDA is not available", "missing": "not found"}[case]
    assert expected in message[0]


def test_data_error_types(tmp_path):
    with pytest.raises(DataError):
        index_folder(tmp_path / "missing")
