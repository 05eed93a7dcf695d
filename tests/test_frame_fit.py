"""The frame fitted to the photos (train.data.frame_fit): the rule, the header read, and mgfen-train using it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from test_train import make_data
from train.cli.mgfen_train import main as train_main
from train.data.folders import Sample
from train.data.frame_fit import fit_frame_size, median_square_side
from train.errors import DataError
from train.model.checkpoint import load_checkpoint

torch.set_num_threads(1)


@pytest.mark.parametrize("side, expected", [
    (279.0, 256),    # BHSig's median square: the largest multiple of 32 not above it (no magnification)
    (640.0, 640),    # the sneaker photos
    (767.9, 736),
    (768.0, 768),    # as large as the frame: the preset's frame
    (3000.0, 768),   # macro photos: the preset's frame, downscaled to as before
    (100.0, 128),    # never below the global view (128) or the crop (96)
])
def test_fit_frame_size(side, expected):
    assert fit_frame_size(side, frame_size=768, global_size=128, crop_size=96) == expected


def test_median_square_side_reads_the_headers(tmp_path):
    samples = []
    for i, (w, h) in enumerate([(300, 100), (200, 400), (500, 500)]):  # square sides 100, 200, 500
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((h, w, 3), np.uint8))
        samples.append(Sample(f"{i}.png", 0, str(i), "train"))
    assert median_square_side(tmp_path, samples) == 200.0
    (tmp_path / "bad.png").write_bytes(b"%PDF-1.4 a document saved as .png")
    with pytest.raises(DataError, match="bad.png.*not a readable image"):  # the runtime reader's message
        median_square_side(tmp_path, samples + [Sample("bad.png", 0, "b", "train")])


def _train(data: Path, run: Path, *extra: str):
    args = ["--data", str(data), "--out", str(run), "--epochs", "1", "--backbone", "resnet18", "--pretrained", "none",
            "--global-size", "64", "--crop-size", "32", "--batch", "4", "--threads", "1", *extra]
    result = CliRunner().invoke(train_main, args)
    assert result.exit_code == 0, result.output
    return result.output, json.loads((run / "report.json").read_text())["frame"], load_checkpoint(run / "best.pt")[1]


def test_mgfen_train_fits_the_frame_to_small_photos(tmp_path):
    data = make_data(tmp_path / "d")  # 128 x 128 photos against the edge preset's 768 px frame
    output, frame, info = _train(data, tmp_path / "fit")
    assert frame == {"size": 128, "preset": 768, "median_square_side": 128.0, "fitted": True}
    assert info["model_config"].preprocess.frame_size == 128  # what export and the runtime read
    assert info["model_config"].preprocess.luma_space == "lab"  # the preset's, kept through the fit
    assert "frame fitted: 128 px (photos' median square 128 px; preset 768" in output

    output, frame, info = _train(data, tmp_path / "preset", "--preset-frame", "--luma-space", "ycrcb")
    assert frame == {"size": 768, "preset": 768, "fitted": False}
    assert info["model_config"].preprocess.frame_size == 768 and "frame fitted" not in output
    assert info["model_config"].preprocess.luma_space == "ycrcb"
