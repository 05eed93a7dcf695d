"""benchmarks/int8_instability.py: the box IoU it counts moved boxes with, and a run on a fake bundle whose
INT8 files are its FP32 ones (so every INT8 decomposition equals FP32 exactly, and only the noise rows move)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import int8_instability  # noqa: E402
from fake_bundle import make_fake_bundle, make_image  # noqa: E402


def test_box_iou_best_match():
    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]], np.float32)
    b = np.array([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.25, 0.5]], np.float32)
    iou = int8_instability.box_iou(a, b)
    np.testing.assert_allclose(iou, [0.5, 1.0], atol=1e-6)  # first box half-covered, second matched exactly
    assert int8_instability.box_iou(a, a + 2.0).max() == 0.0  # disjoint


def test_run_on_fake_bundle(tmp_path):
    bundle = make_fake_bundle(tmp_path / "b", int8=True)
    data = tmp_path / "val"
    for label, colour in (("genuine", "red"), ("counterfeit", "blue")):
        (data / label).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(data / label / f"{i}.png"), make_image(colour, seed=i))
    out = tmp_path / "inst.json"
    assert int8_instability.main(["--bundle", str(bundle), "--data", str(data), "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"][str(data)]
    assert res["n"] == 6 and len(res["frames"]) == 6
    pipes = res["pipelines"]
    for key in ("cpu", "cpu, fp32 boxes", "fp32, cpu boxes", "trt", "trt, fp32 boxes", "fp32, trt boxes"):
        assert pipes[key]["agreement_pct"] == 100.0 and pipes[key]["dp_max"] == 0.0, key
    assert pipes["cpu"]["boxes_moved"] == 0 and pipes["fp32"]["accuracy_pct"] == 100.0
    assert "fp32, noise 2" in pipes and out.with_suffix(".md").read_text().count("| fp32, noise") == 2


def test_not_a_bundle(tmp_path, capsys):
    assert int8_instability.main(["--bundle", str(tmp_path), "--data", str(tmp_path), "--out",
                                  str(tmp_path / "x.json")]) == 2
    assert "not a bundle folder" in capsys.readouterr().err


def test_novelty_variants_reproduce_the_shipped_score_and_refuse_far_frames(tmp_path, capsys):
    """benchmarks/novelty_int8.py: its "shipped (LW)" variant is edge_runtime.novelty's score exactly; on
    features where INT8 equals FP32 nothing changes, and frames far from the train features are refused by
    every variant."""
    import novelty_int8
    from edge_runtime.novelty import fit_novelty

    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    spread = 0.3 * np.geomspace(3.0, 0.01, 32)  # anisotropic, so Ledoit-Wolf shrinks little
    train, val, test = (centre + spread * rng.normal(size=(n, 32)) for n in (60, 50, 20))
    far = -centre + 0.3 * rng.normal(size=(20, 32))
    table = fit_novelty(train, None)
    assert table.shrinkage < 0.5
    np.testing.assert_allclose(novelty_int8.shrink_variant(train, 0.0)(test), table.score(test), rtol=1e-6)  # the table stores float32
    assert not np.allclose(novelty_int8.shrink_variant(train, 0.9)(test), table.score(test))
    same = lambda x: {"fp32": x, "cpu": x, "trt": x}  # noqa: E731
    res = novelty_int8.evaluate({"train": same(train), "val": same(val), "test": same(test), "far": same(far)}, ["far"])
    assert set(res) == {"shipped (LW)", "shrink>=0.2", "shrink>=0.5", "shrink>=0.9", "pca 16", "pca 64"}
    for row in res.values():
        assert row["changed cpu"] == row["changed trt"] == 0 and row["dscore p50 cpu"] == 0.0
        assert row["ood refused fp32"]["far"] == 100.0 and row["test refused fp32"] <= 20.0
    assert novelty_int8.main(["--split", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    assert "no bundle/manifest.json" in capsys.readouterr().err
