"""benchmarks/realdata.py on a tiny generated set: every model scored on the same test images of each seeded
group split, paired differences present, per-group subsampling, and a second run that reuses the trained
models instead of training again (no timing here)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from test_train import make_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import realdata  # noqa: E402
import realdata_ensemble  # noqa: E402

torch.set_num_threads(1)
TINY = ["--epochs", "1", "--frame-size", "128", "--global-size", "64", "--crop-size", "32", "--probe-sizes", "64",
        "--threads", "1"]


def test_realdata_benchmark_end_to_end_and_cached(tmp_path, monkeypatch):
    data = make_data(tmp_path / "d", per=4, split=False, groups=2)  # 12 items per class, 2 shots each
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--data", str(data), "--out", str(out), "--cache", str(cache), "--splits", "2", "--per-group", "1"] + TINY
    assert realdata.main(args) == 0

    sub = cache / "d_per_group1"
    with (sub / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24 and len({r["group"] for r in rows}) == 24  # one shot of every item

    result = json.loads((out / "realdata.json").read_text())["results"][0]
    assert result["images"] == 24 and len(result["splits"]) == 2
    tests = []
    for split in result["splits"]:
        models = split["models"]
        assert {"mgfen", "no-parts"} <= set(models) and len(models) == 2 + 5  # 4 shortcut rows, 1 probe size
        for name, row in models.items():
            assert row["n"] == split["test"] and 0.0 <= row["accuracy"] <= 1.0
            assert ("mgfen_minus_this" in row) == (name != "mgfen")
        scores = json.loads((out / "d" / f"split{split['seed']}" / "mgfen" / "scores.json").read_text())
        tests.append(set(scores["paths"]))
    assert tests[0] != tests[1]  # the seeds draw different group splits
    for name, s in result["summary"].items():
        accs = [sp["models"][name]["accuracy"] for sp in result["splits"]]
        assert s["accuracy_mean"] == pytest.approx(sum(accs) / 2)
    assert "| mgfen |" in (out / "realdata.md").read_text()

    ens_out = tmp_path / "ens.json"  # benchmarks/realdata_ensemble.py on the same runs: reads, trains nothing
    assert realdata_ensemble.main(["--data", str(sub), "--runs", str(out), "--splits", "2", "--probe-size", "64",
                                   "--cache", str(cache), "--out", str(ens_out)]) == 0
    ens = json.loads(ens_out.read_text())["results"]["d"]
    assert [e["seed"] for e in ens] == [0, 1]
    for e, split in zip(ens, result["splits"]):
        assert set(e["models"]) == {"mgfen", "probe", "mean P", "mean log-odds"} and e["test"] == split["test"]
        assert e["models"]["mgfen"]["accuracy"] == split["models"]["mgfen"]["accuracy"]
        assert "minus_probe" in e["models"]["mean P"] and "minus_mgfen" not in e["models"]["probe"]
    assert realdata_ensemble.main(["--data", str(sub), "--runs", str(tmp_path / "none"), "--out", str(ens_out)]) == 2

    def no_training(*a, **k):
        raise AssertionError("a second run must reuse the trained models")

    monkeypatch.setattr("train.fit.trainer.train", no_training)
    assert realdata.main(args) == 0


def test_set_parses_train_config_fields_and_refuses_others():
    assert realdata.parse_sets(["head_epochs=2", "freeze_bn=true", "select=auc", "backbone_lr_scale=0.1"]) == {
        "head_epochs": 2, "freeze_bn": True, "select": "auc", "backbone_lr_scale": 0.1}
    with pytest.raises(SystemExit):
        realdata.parse_sets(["no_such_field=1"])


def test_splits_needed_follows_the_normal_power_formula():
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    for sd, delta in ((0.1, 0.03), (0.05, 0.03), (0.2, 0.1)):
        assert realdata.splits_needed(sd, delta) == pytest.approx((z * sd / delta) ** 2, abs=1.0)
    assert realdata.splits_needed(0.1, 0.03) == 88  # (2.8016 * 0.1 / 0.03)^2 = 87.2, rounded up
    assert realdata.splits_needed(0.0) == 2
    with pytest.raises(ValueError):
        realdata.splits_needed(0.1, 0.0)


def test_power_table_reads_the_paired_differences():
    def split(d_np: float, d_probe: float) -> dict:
        return {"models": {"mgfen": {}, "no-parts": {"mgfen_minus_this": {"roc_auc": d_np}},
                           "frozen ImageNet linear probe at 384 px, logistic regression": {"mgfen_minus_this": {"roc_auc": d_probe}}}}

    results = [{"dataset": "x", "summary": {"mgfen": {}, "no-parts": {},
                                            "frozen ImageNet linear probe at 384 px, logistic regression": {}},
                "splits": [split(-0.1, 0.0), split(0.0, 0.0), split(0.1, 0.0)]}]
    rows = realdata.power_table(results)[2:]
    assert rows[0] == "| x | no-parts | -0.100, +0.000, +0.100 | +0.000 +- 0.100 | 88 |"
    assert rows[1].startswith("| x | linear probe at 384 px | +0.000, +0.000, +0.000 | +0.000 +- 0.000 | 2 |")


def test_grey_copy_keeps_paths_labels_and_groups(tmp_path):
    import cv2
    import numpy as np

    data = make_data(tmp_path / "d", per=2, split=False)
    with (data / "manifest.csv").open("w") as fh:  # a manifest with groups, as the real datasets have
        fh.write("path,label,group\n" + "".join(f"{p.relative_to(data).as_posix()},{p.parent.name},g{i}\n"
                                                for i, p in enumerate(sorted(data.glob("*/*.png")))))
    grey = realdata.grey_copy(data, tmp_path / "d_grey")
    assert (grey / "manifest.csv").read_bytes() == (data / "manifest.csv").read_bytes()
    originals = sorted(p.relative_to(data) for p in data.glob("*/*.png"))
    assert sorted(p.relative_to(grey) for p in grey.glob("*/*.png")) == originals
    for rel in originals:
        colour, g = cv2.imread(str(data / rel)), cv2.imread(str(grey / rel))
        assert g.shape == colour.shape and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
        assert np.array_equal(g[..., 0], cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))
    assert colour.std(axis=2).max() > 0  # the originals did carry colour
    (grey / "marker").write_text("kept")
    assert realdata.grey_copy(data, tmp_path / "d_grey") == grey and (grey / "marker").is_file()  # reused


def test_ensembles_average_probabilities_and_log_odds():
    mgfen, probe = np.array([0.9, 0.2, 1.0]), np.array([0.5, 0.2, 0.5])
    e = realdata_ensemble.ensembles(mgfen, probe)
    np.testing.assert_allclose(e["mean P"], [0.7, 0.2, 0.75])
    lo = (np.log(9.0) + 0.0) / 2  # P 0.9 and 0.5
    np.testing.assert_allclose(e["mean log-odds"][:2], [1 / (1 + np.exp(-lo)), 0.2])
    assert 0.99 < e["mean log-odds"][2] < 1.0  # P 1.0 clipped to 1 - 1e-6, not infinite
