"""benchmarks/realdata_field.py on a tiny generated set and a folder of noise frames: the export's gate
record, the INT8 comparison on test, mgfen-scan's answers on test (fp32 and auto) and the refusal of every
out-of-domain set are all reported, and the answers are counted the way the tables say."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import realdata_field  # noqa: E402

torch.set_num_threads(1)
TINY = ["epochs=1", "frame_size=128", "global_size=64", "crop_size=32"]


def make_set(root: Path, per: int, seed: int) -> Path:
    """root/{genuine,counterfeit}/itemNNN.png: a smooth random background (so no two images share a
    perceptual hash, which the export's calibration check would refuse) with a grey tag, noisy when
    counterfeit."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(("genuine", "counterfeit")):
        (root / name).mkdir(parents=True)
        for i in range(per):
            img = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (128, 128), interpolation=cv2.INTER_CUBIC)
            tag = np.full((48, 48, 3), 170, np.int64)
            if label:
                tag += rng.integers(-40, 41, tag.shape)
            y, x = rng.integers(8, 72, 2)
            img[y:y + 48, x:x + 48] = np.clip(tag, 0, 255)
            cv2.imwrite(str(root / name / f"item{i:03d}.png"), img)
    return root


def test_refusal_and_accuracy_count_answers(tmp_path):
    answers = {"a.png": "unknown", "b.png": "retake", "c.png": "genuine", "d.png": "uncertain"}
    r = realdata_field.refusal(answers)
    assert (r["n"], r["unknown"], r["retake"], r["confident"]) == (4, 1, 1, 1) and r["rate"] == 0.5
    assert r["ci95"][0] < 0.5 < r["ci95"][1]
    test = tmp_path / "test"
    for label, name in (("genuine", "c.png"), ("genuine", "d.png"), ("counterfeit", "e.png")):
        (test / label).mkdir(parents=True, exist_ok=True)
        (test / label / name).write_bytes(b"")
    acc = realdata_field.scan_accuracy(answers, test)
    assert acc["n"] == 3 and abs(acc["accuracy"] - 1 / 3) < 1e-9 and abs(acc["coverage"] - 1 / 3) < 1e-9
    assert acc["answers"]["missing"] == 1 and acc["answers"]["uncertain"] == 1


def test_field_benchmark_end_to_end(tmp_path):
    a = make_set(tmp_path / "a", 12, 0)
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        cv2.imwrite(str(noise / f"n{i}.png"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["--data", str(a), "--ood", str(noise), "--out", str(out), "--runs", str(tmp_path / "runs"),
            "--cache", str(tmp_path / "cache")] + [x for s in TINY for x in ("--set", s)]
    assert realdata_field.main(args) == 0
    results = json.loads((out / "field.json").read_text())["results"]
    assert [r["dataset"] for r in results] == ["a"]
    for r in results:
        assert set(r["int8_test"]) == {"cpu", "trt"}
        for g in r["int8_test"].values():
            assert g["n"] == r["images"]["test"] and 0.0 <= g["agreement"] <= 1.0
        repeat = r["fp32_repeatability_test"]
        assert repeat["n"] == r["images"]["test"] and repeat["noise"] == 1.0 and 0.0 <= repeat["agreement"] <= 1.0
        assert set(r["export"]["gate_val"]) == {"cpu", "trt"}
        for key in ("fp32", "auto", "fp32_nogate", "auto_nogate"):
            s = r["scan"][key]
            assert s["n"] == r["images"]["test"] and sum(s["answers"].values()) == s["n"]
            assert s["answers"]["missing"] == 0  # every test image got an answer
        assert r["scan"]["auto_nogate"]["answers"]["retake"] == 0  # --no-gate classifies every frame
        for gate in ("gate", "_nogate"):
            assert set(r["refusal"][gate]) == {"noise", "blank frames", "defocused own test"}
            assert r["refusal"][gate]["noise"]["n"] == 4
            assert r["refusal"][gate]["blank frames"]["n"] == len(realdata_field.BLANK_LEVELS)
        assert r["refusal"]["gate"]["blank frames"]["retake"] == len(realdata_field.BLANK_LEVELS)  # flat: no focus
    md = (out / "field.md").read_text()
    assert "| a | 0 |" in md and "blank frames" in md
