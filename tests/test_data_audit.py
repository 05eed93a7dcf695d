"""`mgfen-data audit` and `mgfen-eval --baselines` (issue 12): a planted file-format shortcut is flagged,
a planted cross-split duplicate is named, the baselines sit at chance on `mgfen-data synth --strength 0`,
bad input gets one-line errors; and the helpers under them (JPEG quality, pHash, group folds, bootstrap
intervals, paired differences, permutation test, the two classifiers) checked against cases that can fail.

Small data only: 128 px synthetic frames, probe sizes of 32/64 px where the probe is not the point.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from test_bad_input import one_line_error
from train.audit.classifiers import LogisticRegression, NearestNeighbour
from train.audit.image_meta import read_meta
from train.audit.image_stats import DUPLICATE_DISTANCE, HASH_BITS, hamming, near_duplicate_pairs, phash
from train.cli.mgfen_data import main as data_main
from train.evaluate.metrics import roc_auc
from train.evaluate.resample import (group_folds, paired_difference, permutation_pvalue, score_with_interval,
                                     weighted_auc)

torch.set_num_threads(1)
NULL_N = 120  # images of the strength-0 set: about 48 items, enough for the chance-level band below


def _audit(root: Path, *extra) -> dict:
    result = CliRunner().invoke(data_main, ["audit", str(root), "--json", *map(str, extra)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def _baseline(report: dict, name: str) -> dict:
    return next(r for r in report["baselines"] if r["name"] == name)


@pytest.fixture(scope="module")
def null_data(tmp_path_factory) -> Path:
    """`mgfen-data synth --strength 0 --bias 0.5`: both classes from one random process, no background bias."""
    root = tmp_path_factory.mktemp("null") / "d"
    result = CliRunner().invoke(data_main, ["synth", "--out", str(root), "--n", str(NULL_N), "--size", "128",
                                            "--strength", "0", "--bias", "0.5", "--workers", "1"])
    assert result.exit_code == 0, result.output
    return root


def _copy_images(src: Path, dst: Path) -> list[Path]:
    """The split/class images of `src` copied to `dst` (no manifest: the default group rule applies)."""
    out = []
    for p in sorted(src.glob("*/*/*.png")):
        if p.parts[-3] in ("train", "val", "test"):
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            out.append(target)
    return out


@pytest.fixture(scope="module")
def shortcut_data(null_data, tmp_path_factory) -> Path:
    """The strength-0 images, counterfeits re-saved as 96 px JPEG quality 70, genuine kept as 128 px PNG."""
    root = tmp_path_factory.mktemp("shortcut") / "d"
    for p in _copy_images(null_data, root):
        if p.parts[-2] == "counterfeit":
            small = cv2.resize(cv2.imread(str(p)), (96, 96), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(p.with_suffix(".jpg")), small, [cv2.IMWRITE_JPEG_QUALITY, 70])
            p.unlink()
    return root


# ------------------------------------------------------------------------------------------- the audit
def test_planted_format_shortcut_is_flagged(shortcut_data, tmp_path):
    out = tmp_path / "audit"
    report = _audit(shortcut_data, "--probe-sizes", "none", "--permutations", "50", "--out", out)
    meta = report["metadata"]
    assert meta["counterfeit"]["formats"] == {"JPEG": meta["counterfeit"]["n"]}
    assert meta["counterfeit"]["jpeg_quality"]["median"] == 70 and meta["genuine"]["jpeg_quality"] is None
    assert meta["counterfeit"]["width"]["max"] == 96 and meta["genuine"]["width"]["min"] == 128
    best = max(_baseline(report, n)["roc_auc"] for n in ("metadata/logistic", "metadata/1nn"))
    assert best >= 0.95
    assert report["permutation_p"]["metadata"] < 0.05
    warnings = [v["text"] for v in report["verdict"] if v["level"] == "WARNING"]
    assert any(t.startswith("image metadata alone predicts the label") for t in warnings), report["verdict"]
    bar = [v["text"] for v in report["verdict"] if v["level"] == "BAR"]
    assert len(bar) == 1 and f"{best:.3f}" in bar[0]
    assert {p.name for p in out.iterdir()} == {"audit.json", "audit.md", "audit.png"}
    assert json.loads((out / "audit.json").read_text())["verdict"] == report["verdict"]
    assert "image metadata alone predicts" in (out / "audit.md").read_text()
    picture = cv2.imread(str(out / "audit.png"))
    assert picture is not None and picture.shape[0] > 100 and picture.std() > 5


def test_planted_cross_split_duplicate_is_named(null_data, tmp_path):
    root = tmp_path / "d"
    _copy_images(null_data, root)
    original = sorted((root / "train" / "genuine").glob("*.png"))[0]
    copy = root / "test" / "genuine" / "planted_copy.jpg"  # resized and recompressed, not byte-identical
    small = cv2.resize(cv2.imread(str(original)), (120, 120), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(copy), small, [cv2.IMWRITE_JPEG_QUALITY, 90])
    result = CliRunner().invoke(data_main, ["audit", str(root), "--probe-sizes", "none", "--permutations", "0"])
    assert result.exit_code == 0, result.output
    a, b = original.relative_to(root).as_posix(), copy.relative_to(root).as_posix()
    warning = [ln for ln in result.output.splitlines() if ln.strip().startswith("WARNING") and "across splits" in ln]
    assert len(warning) == 1 and a in warning[0] and b in warning[0], result.output
    assert f"CROSS-SPLIT DUPLICATE: {a}" in result.output or f"CROSS-SPLIT DUPLICATE: {b}" in result.output
    report = _audit(root, "--probe-sizes", "none", "--permutations", "0")
    pairs = report["duplicates"]["cross_split"]
    assert report["duplicates"]["cross_split_count"] == 1 and {pairs[0]["a"], pairs[0]["b"]} == {a, b}


def test_baselines_at_chance_without_micro_differences(null_data):
    report = _audit(null_data, "--probe-sizes", "64", "--permutations", "50")
    assert report["splits_declared"] and report["groups"]["cv_unit"] == "group"
    assert not report["groups"]["spanning_splits"] and report["duplicates"]["cross_split_count"] == 0
    for row in report["baselines"]:
        # about 48 items: the out-of-fold AUC of a null feature set spreads with sd ~0.11 around 0.5
        assert 0.25 <= row["roc_auc"] <= 0.75, row
        assert row["roc_auc_ci"][0] <= row["roc_auc"] <= row["roc_auc_ci"][1]
    assert {r["family"] for r in report["baselines"]} == {"metadata", "colour", "probe"}
    assert min(report["permutation_p"].values()) > 0.05, report["permutation_p"]
    ok = sorted(v["text"].split(" not predict")[0] for v in report["verdict"] if v["level"] == "OK")
    assert ok == ["global colour statistics do", "image metadata does"], report["verdict"]
    # 128 px synthetic frames against the edge preset's 768 px frame: upsampled x6, a 96 px crop spans 16 px
    res = report["resolution"]
    assert (res["square_side"], res["upsampling"], res["crop_covers_photo_px"]) == (128, 6.0, 16.0)
    assert any("fits its frame to about 128 px" in v["text"] and "span 16, magnified x6.0" in v["text"]
               for v in report["verdict"])


def test_resolution_notes_follow_the_photo_size():
    from train.audit.resolution import resolution_report, resolution_verdict

    wide = resolution_report([(1000, 290), (1100, 300), (900, 280)], frame_size=768, global_size=128, crop_size=96)
    assert wide["square_side"] == 290 and wide["kept_long_side"] == 290 / 1000
    assert abs(wide["upsampling"] - 768 / 290) < 1e-9
    texts = [v["text"] for v in resolution_verdict(wide)]
    assert len(texts) == 2 and "about 288 px" in texts[0] and "spans 97 photo pixels" in texts[0]  # 96 * 290 / 288
    assert "middle 29%" in texts[1]
    large = resolution_report([(4000, 3000), (3000, 3000)], frame_size=768, global_size=128, crop_size=96)
    assert large["upsampling"] < 1 and resolution_verdict(large) == []
    # never suggest a frame below the global view: 100 px photos against a 128 px global view
    small = resolution_report([(100, 100)], frame_size=768, global_size=128, crop_size=96)
    assert "about 128 px" in resolution_verdict(small)[0]["text"]


def test_audit_preset_choice_lists_every_preset():
    from train.cli.data_audit import audit_cmd
    from train.model.mgfen import PRESETS

    choice = next(p for p in audit_cmd.params if p.name == "preset").type
    assert sorted(choice.choices) == sorted(PRESETS)


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line(tmp_path, null_data):
    (tmp_path / "empty").mkdir()
    assert "no images found" in one_line_error(CliRunner().invoke(data_main, ["audit", str(tmp_path / "empty")]))
    assert "not found" in one_line_error(CliRunner().invoke(data_main, ["audit", str(tmp_path / "nope")]))
    one = tmp_path / "one" / "genuine"
    one.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(one / f"a{i}.png"), np.full((64, 64, 3), 40 * i, np.uint8))
    assert "only one class" in one_line_error(CliRunner().invoke(data_main, ["audit", str(tmp_path / "one")]))
    broken = tmp_path / "broken"
    _copy_images(null_data, broken)
    victim = sorted((broken / "val" / "counterfeit").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    line = one_line_error(CliRunner().invoke(data_main, ["audit", str(broken), "--probe-sizes", "none"]))
    assert victim.name in line and "truncated" in line
    line = one_line_error(CliRunner().invoke(data_main, ["audit", str(null_data), "--probe-sizes", "100"]))
    assert "multiples of 32" in line


# ------------------------------------------------------------------------------------- metric helpers
@pytest.mark.parametrize("quality", [70, 95])
def test_jpeg_quality_estimate_recovers_the_saved_quality(quality):
    rng = np.random.default_rng(quality)
    img = cv2.GaussianBlur(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), (5, 5), 0)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    meta = read_meta(buf.tobytes(), img.shape)
    assert meta.format == "JPEG" and (meta.width, meta.height) == (128, 96)
    assert abs(meta.jpeg_quality - quality) <= 2 and meta.jpeg_standard_tables
    png = read_meta(cv2.imencode(".png", img)[1].tobytes(), img.shape)
    assert png.format == "PNG" and png.jpeg_quality is None and png.bytes_per_pixel > 0


def test_phash_finds_a_resized_recompressed_copy_and_not_a_stranger():
    rng = np.random.default_rng(0)
    a = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), (9, 9), 0)
    b = cv2.GaussianBlur(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), (9, 9), 0)
    copy = cv2.imdecode(cv2.imencode(".jpg", cv2.resize(a, (100, 100)), [cv2.IMWRITE_JPEG_QUALITY, 80])[1], 1)
    h = np.stack([phash(a), phash(copy), phash(b)])
    d = hamming(h, h)
    assert h.shape == (3, HASH_BITS // 8) and d[0, 0] == 0 and d[0, 1] == d[1, 0]
    assert d[0, 1] <= DUPLICATE_DISTANCE < d[0, 2] and d[0, 2] >= HASH_BITS // 4
    assert near_duplicate_pairs(h) == [(0, 1, int(d[0, 1]))]


def test_group_folds_keep_groups_whole_and_stratify():
    rng = np.random.default_rng(1)
    groups = [f"g{i}" for i in rng.integers(0, 40, 300)]
    group_label = {g: int(g[1:]) % 2 for g in set(groups)}
    labels = np.array([group_label[g] for g in groups])
    fold = group_folds(labels, groups, 5, seed=3)
    for g in set(groups):
        assert len({fold[i] for i in range(len(groups)) if groups[i] == g}) == 1
    for f in range(5):
        assert set(labels[fold == f].tolist()) == {0, 1}
    assert np.array_equal(fold, group_folds(labels, groups, 5, seed=3))


def test_weighted_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.random(200) + 0.4 * labels, 1)  # many ties
    assert weighted_auc(labels, scores, np.ones(200)) == pytest.approx(roc_auc(labels, scores))
    w = rng.integers(0, 3, 200).astype(float)  # integer weights = repeated images
    rep = np.repeat(np.arange(200), w.astype(int))
    assert weighted_auc(labels, scores, w) == pytest.approx(roc_auc(labels[rep], scores[rep]))


def _noisy_scores(n_groups: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    gid = np.repeat(np.arange(n_groups), 3)
    labels = gid % 2
    scores = 1 / (1 + np.exp(-(labels - 0.5) * 1.5 - rng.normal(0, 1, n_groups)[gid] - rng.normal(0, 0.5, len(gid))))
    return labels, scores, [f"item{g}" for g in gid]


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_groups():
    widths = []
    for n_groups in (20, 320):
        labels, scores, groups = _noisy_scores(n_groups, 0)
        s = score_with_interval(labels, scores, groups, n_boot=500, seed=0)
        assert s.groups == n_groups and s.n == 3 * n_groups
        assert s.accuracy_ci[0] <= s.accuracy <= s.accuracy_ci[1]
        assert s.roc_auc_ci[0] <= s.roc_auc <= s.roc_auc_ci[1]
        widths.append(s.roc_auc_ci[1] - s.roc_auc_ci[0])
    assert widths[1] < widths[0] / 2  # 16x the groups: about a quarter of the width


def test_paired_difference_and_permutation_test():
    labels, scores, groups = _noisy_scores(60, 1)
    same = paired_difference(labels, scores, scores, groups, n_boot=300)
    assert same["roc_auc"] == 0 and same["roc_auc_ci"] == [0.0, 0.0]
    noise = np.random.default_rng(5).random(len(labels))
    better = paired_difference(labels, scores, noise, groups, n_boot=300)
    assert better["roc_auc"] > 0 and better["roc_auc_ci"][0] > 0 and better["roc_auc_p_not_better"] < 0.05
    worse = paired_difference(labels, noise, scores, groups, n_boot=300)
    assert worse["roc_auc_ci"][1] < 0 and worse["roc_auc_p_not_better"] > 0.95

    def statistic(x):  # the AUC of fixed informative scores under relabelling
        return float(weighted_auc(x, scores, np.ones(len(x))))

    assert permutation_pvalue(statistic, labels, groups, 99, seed=0)[1] == pytest.approx(0.01)
    _, p_null = permutation_pvalue(lambda x: float(weighted_auc(x, noise, np.ones(len(x)))), labels, groups, 99)
    assert p_null > 0.05


def test_logistic_regression_is_at_its_optimum():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 200)) * rng.uniform(0.1, 10, 200)  # more features than images, mixed scales
    y = (x[:, 0] / x[:, 0].std() + rng.normal(0, 1, 80) > 0).astype(int)
    model = LogisticRegression(l2=2.0).fit(x, y)
    z = model.scale(x)
    residual = model.predict_proba(x) - y
    # stationarity of sum log-loss + 0.5 * l2 * |w|^2 (intercept free)
    assert abs(residual.sum()) < 1e-6
    assert np.abs(z.T @ residual + 2.0 * model.coef).max() < 1e-6
    assert np.corrcoef(model.predict_proba(x), z[:, 0])[0, 1] > 0.5


def test_nearest_neighbour_score_follows_the_nearest_label():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 3)), np.array([0, 1] * 20)
    q = rng.normal(size=(25, 3))
    model = NearestNeighbour().fit(x, y)
    z, zq = model.scale(x), model.scale(q)
    nearest = y[((zq[:, None] - z[None]) ** 2).sum(-1).argmin(1)]
    assert np.array_equal(model.predict_proba(q) > 0.5, nearest == 1)
    assert np.allclose(model.predict_proba(x), y, atol=1e-6)  # a training image is its own neighbour


# ---------------------------------------------------------------------------------- mgfen-eval --baselines
def test_eval_baselines_next_to_a_tiny_checkpoint(tmp_path):
    from edge_runtime.preprocess import PreprocessConfig
    from test_train import make_data
    from train.cli.mgfen_eval import main as eval_main
    from train.evaluate.vs_baselines import format_baselines
    from train.model.checkpoint import save_checkpoint
    from train.model.mgfen import ModelConfig, build_model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", fpn_channels=16, preprocess=PreprocessConfig(128, 64, 32))
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, build_model(cfg), ["genuine", "counterfeit"], metrics={}, data_hash="x", epoch=1)
    data = make_data(tmp_path / "d")
    args = ["--ckpt", str(ckpt), "--data", str(data), "--baselines", "--probe-sizes", "32"]
    result = CliRunner().invoke(eval_main, args + ["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    b = report["baselines"]
    text = "\n".join(format_baselines(b))  # what the CLI prints without --json
    assert "checkpoint minus baseline" in text and "frozen ImageNet linear probe at 32 px" in text
    assert text.splitlines()[-1].startswith("verdict: the checkpoint ") and "clear" in text.splitlines()[-1]
    assert b["checkpoint"]["n"] == report["metrics"]["n"] == 8 and b["train_images"] == 8
    assert b["checkpoint"]["accuracy"] == pytest.approx(report["metrics"]["accuracy"])
    assert len(b["baselines"]) == 5 and all(r["n"] == 8 for r in b["baselines"])
    best = max(r["roc_auc"] for r in b["baselines"])
    assert b["clears"] == (b["checkpoint"]["roc_auc"] > best)
    line = one_line_error(CliRunner().invoke(eval_main, args + ["--split", "train"]), alone=False)
    assert "--split val or test" in line
