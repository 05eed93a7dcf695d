"""The retake gate fitted on the train photos (edge_runtime.quality_fit, train.fit.gate_fit): it admits
photos like the training set's (signatures on white paper, which the default gate calls too bright), still
refuses blank and defocused frames, never tightens a default, and reaches the scanner through the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.bundle.manifest import Manifest, load_bundle
from edge_runtime.cli.scan_cli import main as scan_main
from edge_runtime.errors import BundleError
from edge_runtime.names import MANIFEST_FILE
from edge_runtime.quality import QualityConfig, check_frame
from edge_runtime.quality_fit import (FIT_REJECT_RATE, FOCUS_FLOOR, GateMeasures, describe_gate_fit, fit_gate,
                                      gate_for_bundle, refused)
from cli_runner import stderr_runner
from fake_bundle import make_fake_bundle
from train.data.folders import Sample
from train.fit.gate_fit import fit_quality, measure_photos


def _paper(seed: int, h: int = 240, w: int = 520) -> np.ndarray:
    """A pen signature on white paper: mean grey ~240, sharp thin dark strokes (BGR uint8)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 246, np.uint8)
    img += rng.integers(0, 6, (h, w, 1), dtype=np.uint8)  # paper grain
    pts = np.stack([np.linspace(40, w - 40, 14), h / 2 + rng.normal(0, h / 6, 14)], 1).astype(np.int32)
    cv2.polylines(img, [pts], False, (40, 30, 30), 2, cv2.LINE_AA)
    return img


def _folder(tmp_path: Path, n: int = 24) -> tuple[Path, list[Sample]]:
    samples = []
    for i in range(n):
        rel = f"genuine/sig_{i:02d}.png"
        (tmp_path / "genuine").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(tmp_path / rel), _paper(i))
        samples.append(Sample(rel, 0, f"g{i}", "train"))
    return tmp_path, samples


def _measures(focus, brightness, clipped) -> GateMeasures:
    return GateMeasures(np.asarray(focus, float), np.asarray(brightness, float), np.asarray(clipped, float))


def test_white_paper_photos_pass_the_fitted_gate_and_defocused_or_blank_frames_do_not(tmp_path):
    root, samples = _folder(tmp_path)
    default = QualityConfig()
    assert all(check_frame(_paper(i), default).reason.startswith("too bright") for i in range(3))
    record = fit_quality(root, samples)
    assert record["n"] == len(samples) and record["refused_by_default"] == len(samples)
    assert record["refused_after"] == 0
    gate = gate_for_bundle(record)
    assert gate.max_brightness > default.max_brightness and gate.min_focus == default.min_focus
    for seed in range(100, 106):  # unseen photos of the same kind
        assert check_frame(_paper(seed), gate).ok
    blurred = cv2.GaussianBlur(_paper(7), (0, 0), 12)
    assert check_frame(blurred, gate).reason.startswith("out of focus")
    for level in (0, 128, 255):
        assert not check_frame(np.full((240, 320, 3), level, np.uint8), gate).ok


def test_the_fit_refuses_at_most_the_reject_rate_of_train_photos_and_never_tightens():
    rng = np.random.default_rng(0)
    bright = _measures(rng.uniform(50, 900, 500), rng.uniform(228, 250, 500), rng.uniform(0, 0.6, 500))
    cfg, rec = fit_gate(bright)
    assert refused(cfg, bright) <= 3 * FIT_REJECT_RATE * 500 and rec["refused_after"] == refused(cfg, bright)
    assert cfg.max_brightness == pytest.approx(min(np.quantile(bright.brightness, 0.99) + 10, 255), abs=0.01)
    assert cfg.max_clipped == pytest.approx(np.quantile(bright.clipped, 0.99) + 0.05, abs=1e-3)
    ordinary = _measures(rng.uniform(300, 5000, 200), rng.uniform(80, 160, 200), rng.uniform(0, 0.05, 200))
    assert fit_gate(ordinary)[0].thresholds() == QualityConfig().thresholds()  # sharp, well exposed: defaults
    blurry = _measures(rng.uniform(0.5, 3.0, 200), np.full(200, 120.0), np.zeros(200))
    assert fit_gate(blurry)[0].min_focus == FOCUS_FLOOR  # never so low that a defocused frame passes
    soft = _measures(rng.uniform(8, 40, 200), np.full(200, 120.0), np.zeros(200))
    assert fit_gate(soft)[0].min_focus == pytest.approx(0.5 * np.quantile(soft.focus, 0.01), abs=1e-3)


def test_bad_fit_input_is_a_value_error():
    with pytest.raises(ValueError, match="same number"):
        _measures([1.0, 2.0], [100.0], [0.0])
    with pytest.raises(ValueError, match="reject_rate"):
        fit_gate(_measures([1.0], [100.0], [0.0]), reject_rate=0.7)
    with pytest.raises(ValueError, match="no train photos"):
        measure_photos(Path("."), [])


def test_manifest_keeps_the_record_and_refuses_a_bad_one(tmp_path):
    root, samples = _folder(tmp_path / "data", n=6)
    record = fit_quality(root, samples)
    bundle = make_fake_bundle(tmp_path / "bundle")
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    assert data["quality"] is None and load_bundle(bundle).manifest.quality is None  # older bundles: defaults
    data["quality"] = record
    path.write_text(json.dumps(data))
    assert Manifest.from_dict(load_bundle(bundle).manifest.to_dict()).quality == record
    for bad in ({"thresholds": {"min_focus": 1.0, "sharpness": 3}}, {"thresholds": {"min_brightness": 300.0}},
                {"thresholds": "loose"}):
        with pytest.raises(BundleError, match="quality"):
            Manifest.from_dict({**data, "quality": bad})


def _scan(bundle: Path, frames: Path, *extra: str) -> tuple[list[dict], str]:
    res = stderr_runner().invoke(scan_main, ["run", "--bundle", str(bundle), "--source", f"file://{frames}",
                                         "--session-frames", "1", "--min-frames", "1", "--no-prefetch", *extra])
    assert res.exit_code == 0, res.output
    lines = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    return lines, res.stderr


def test_scanner_uses_the_bundle_gate_and_min_focus_still_overrides(tmp_path):
    root, samples = _folder(tmp_path / "data", n=12)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        assert cv2.imwrite(str(frames / f"paper_{i}.png"), _paper(50 + i))
    bundle = make_fake_bundle(tmp_path / "bundle")
    events, err = _scan(bundle, frames)
    assert [e["type"] for e in events].count("retake") == 3 and "quality gate fitted" not in err

    path = bundle / MANIFEST_FILE
    record = fit_quality(root, samples)
    path.write_text(json.dumps({**json.loads(path.read_text()), "quality": record}))
    events, err = _scan(bundle, frames)
    assert [e["type"] for e in events].count("frame") == 3
    assert describe_gate_fit(record) in err
    events, err = _scan(bundle, frames, "--min-focus", "1e6")
    assert all(e["reason"].startswith("out of focus") for e in events if e["type"] == "retake")
    assert [e["type"] for e in events].count("retake") == 3 and "--min-focus 1e+06" in err



def test_benchmark_counts_retakes_of_both_gates(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import quality_fit as bench

    for label in ("genuine", "counterfeit"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(10):
            seed = i + 20 * (label == "genuine")
            assert cv2.imwrite(str(tmp_path / "data" / label / f"{label}{i}.png"), _paper(seed))
    out = tmp_path / "qf.json"
    assert bench.main(["--data", str(tmp_path / "data"), "--splits", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:
        assert r["test_refused_default"] == r["n_test"] > 0 and r["test_refused_fitted"] == 0
        assert r["defocused_refused_fitted"] == r["n_defocused"] and r["blank_refused_fitted"] == r["n_blank"] == 6
