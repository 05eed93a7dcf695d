"""Evaluation: metrics against hand-computed values, mgfen-eval end to end (report, overlays), and
one-line errors for a non-checkpoint, a checkpoint of another architecture and missing CUDA."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edge_runtime.preprocess import PreprocessConfig
from train.cli.mgfen_eval import main as eval_main
from train.errors import CheckpointError
from train.evaluate.metrics import classification_report, roc_auc
from train.fit.thresholds import fit_thresholds
from train.model.checkpoint import load_checkpoint, save_checkpoint
from train.model.mgfen import ModelConfig, build_model
from tests.test_train import make_data

torch.set_num_threads(1)
TINY = ModelConfig(backbone="resnet18", fpn_channels=16, preprocess=PreprocessConfig(frame_size=128, global_size=64, crop_size=32))


def test_metrics_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8, 0.7])
    rep = classification_report(labels, np.stack([1 - p1, p1], 1))
    assert rep["confusion_matrix"] == [[2, 1], [1, 3]]
    assert rep["accuracy"] == pytest.approx(5 / 7)
    assert rep["precision"] == pytest.approx(3 / 4) and rep["recall"] == pytest.approx(3 / 4)
    assert rep["f1"] == pytest.approx(0.75)
    # AUC: pairs (pos > neg): 0.9,0.8,0.7 beat all 3 negatives; 0.4 beats 0.1, 0.2 -> (9 + 2) / 12
    assert rep["roc_auc"] == pytest.approx(11 / 12)
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


@pytest.fixture()
def ckpt_and_data(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, model, ["genuine", "counterfeit"], metrics={"val_acc": 0.5}, data_hash="x", epoch=3)
    return ckpt, make_data(tmp_path / "d")


def test_eval_cli_writes_report_and_overlays(ckpt_and_data, tmp_path):
    ckpt, data = ckpt_and_data
    out = tmp_path / "eval"
    result = CliRunner().invoke(eval_main, ["--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--samples", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert m["n"] == 8 and sum(map(sum, m["confusion_matrix"])) == 8
    assert set(m) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"}
    assert len(report["overlays"]) == 3
    img = cv2.imread(str(out / report["overlays"][0]["file"]))
    assert img is not None and img.shape == (512, 512, 3)
    assert len(report["overlays"][0]["boxes"]) == 4


def test_checkpoint_roundtrip_is_exact(ckpt_and_data):
    ckpt, _ = ckpt_and_data
    model, info = load_checkpoint(ckpt)
    assert info["model_config"] == TINY and info["epoch"] == 3
    x = torch.rand(1, 3, 64, 64)
    torch.manual_seed(0)
    ref = build_model(TINY).eval()
    with torch.no_grad():
        for a, b in zip(model.global_forward(x), ref.global_forward(x)):
            assert torch.equal(a, b)


def test_other_architecture_and_non_checkpoints(tmp_path, ckpt_and_data):
    ckpt, data = ckpt_and_data
    raw = torch.load(ckpt, weights_only=False)
    raw["model_config"]["backbone"] = "resnet50"  # weights of resnet18 under a resnet50 config
    other = tmp_path / "other.pt"
    torch.save(raw, other)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_checkpoint(other)
    plain = tmp_path / "plain.pt"
    torch.save(build_model(TINY).state_dict(), plain)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    for path, words in ((other, "another architecture"), (plain, "not an MGFEN checkpoint"), (junk, "not a readable")):
        result = CliRunner().invoke(eval_main, ["--ckpt", str(path), "--data", str(data)])
        assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
        assert result.output.count("Error:") == 1 and words in result.output, result.output


def test_eval_on_missing_cuda(ckpt_and_data):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    ckpt, data = ckpt_and_data
    result = CliRunner().invoke(eval_main, ["--ckpt", str(ckpt), "--data", str(data), "--device", "cuda"])
    assert result.exit_code != 0 and "CUDA is not available" in result.output


def test_eval_reports_decisions_at_the_checkpoints_thresholds(ckpt_and_data, tmp_path):
    """Coverage, accuracy on decided items and counterfeit recall at the checkpoint's own thresholds, the
    risk-coverage table and picture, and each overlay's prediction and probability on the CLI."""
    ckpt, data = ckpt_and_data
    first = CliRunner().invoke(eval_main, ["--ckpt", str(ckpt), "--data", str(data), "--samples", "8", "--json",
                                           "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    rows = json.loads(first.stdout[first.stdout.index("{"):])["overlays"]
    assert len(rows) == 8 and len({o["p_counterfeit"] for o in rows}) == 8  # eight distinct scores
    p = np.sort([o["p_counterfeit"] for o in rows])
    # thresholds between the 3rd/4th and the 6th/7th score: 3 genuine calls, 2 counterfeit calls, 3 uncertain
    genuine_at, counterfeit_at = (p[2] + p[3]) / 2, (p[5] + p[6]) / 2
    raw = torch.load(ckpt, weights_only=False)
    raw["thresholds"] = {"genuine_at": float(genuine_at), "counterfeit_at": float(counterfeit_at)}
    # a fit record as mgfen-train writes it (fitted on these scores; the thresholds above are set by hand)
    raw["threshold_fit"] = fit_thresholds([o["true"] == "counterfeit" for o in rows], [o["p_counterfeit"] for o in rows],
                                          n_resamples=50).to_dict()
    fitted = tmp_path / "fitted.pt"
    torch.save(raw, fitted)
    out = tmp_path / "eval"
    res = CliRunner().invoke(eval_main, ["--ckpt", str(fitted), "--data", str(data), "--samples", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    d = report["decisions"]["at_thresholds"]
    assert (d["genuine_at"], d["counterfeit_at"]) == (pytest.approx(genuine_at), pytest.approx(counterfeit_at))
    by_score = sorted(rows, key=lambda o: o["p_counterfeit"])
    right = sum(o["true"] == "genuine" for o in by_score[:3]) + sum(o["true"] == "counterfeit" for o in by_score[6:])
    n_cf = sum(o["true"] == "counterfeit" for o in rows)
    assert d["decided"] == 5 and d["coverage"] == pytest.approx(5 / 8)
    assert d["accuracy_decided"] == pytest.approx(right / 5)
    assert d["counterfeit_recall"] == pytest.approx(sum(o["true"] == "counterfeit" for o in by_score[6:]) / n_cf)
    again = sorted(report["overlays"], key=lambda o: o["p_counterfeit"])
    assert [o["decision"] for o in again] == ["genuine"] * 3 + ["uncertain"] * 3 + ["counterfeit"] * 2
    table = report["decisions"]["risk_coverage"]["table"]
    assert table[0]["half_width"] == 0.0 and table[0]["decided"] == 8  # the plain argmax row decides everything
    assert table[0]["errors"] == 8 - round(report["metrics"]["accuracy"] * 8)
    assert cv2.imread(str(out / "risk_coverage.png")) is not None and (out / "risk_coverage.md").is_file()
    assert f"coverage 62.5% (5/8 decided)" in res.output
    # bootstrap intervals on this split and the Clopper-Pearson claim from its counterfeits; the fit record's lines
    e, claim = report["decisions"]["expected"], report["decisions"]["recall_claim"]
    assert e["coverage"]["low"] <= 5 / 8 <= e["coverage"]["high"] and e["by"] == "group"
    assert claim["n"] == n_cf and claim["caught"] == n_cf - d["counterfeit_missed"]
    assert f"95% intervals over {e['n_resamples']} resamples of test by group: coverage " in res.output
    assert f"recall claim (test): {claim['text']}" in res.output
    assert "fit on val: expected on unseen items" in res.output and "fit on val: recall claim (val): " in res.output
    name = by_score[0]["image"]
    assert f"{name}  true {by_score[0]['true']}  pred " in res.output
    assert f"P(counterfeit) {by_score[0]['p_counterfeit']:.3f} -> genuine" in res.output
