"""The `unknown` answer (issue 19): the novelty score on known Gaussian data, a tiny trained model that
refuses noise, flat colour and another generator's frames through its exported bundle, the bench's novelty
stage, the runtime on a bundle without a novelty table, the session vote with unknown frames, the scanner's
summary and the audit log, `mgfen-eval --ood` and its histogram, `mgfen-train --novelty-rate`, and INT8
novelty scores against FP32 in the export's gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_runtime import events, names
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.cli.scan_cli import main as scan_main
from edge_runtime.model_runner import NO_NOVELTY, ModelRunner
from edge_runtime.novelty import (DEFAULT_TARGET_RATE, UNKNOWN, fit_novelty, fold_of, heldout_scores, load_table,
                                  save_table, unit_rows)
from edge_runtime.quality_fit import FIT_REJECT_RATE, gate_for_bundle
from edge_runtime.roi import Thresholds
from edge_runtime.scan_summary import format_summary, summarise
from edge_runtime.scanner import ScanStats
from edge_runtime.session import SessionConfig, SessionTracker
from edge_runtime.sinks.audit_log import AuditLog
from cli_runner import stderr_runner
from fake_bundle import make_fake_bundle, make_image


def _gaussian(rng: np.random.Generator, n: int, d: int, mix: np.ndarray, shift: float = 0.0) -> np.ndarray:
    # offset so the L2 normalisation keeps the data's structure (features are pooled activations, >= 0)
    return rng.normal(size=(n, d)) @ mix + 10.0 + shift


# ---------------------------------------------------------------------------------------- the score


def test_in_domain_refusal_is_near_the_target_and_shifted_data_is_refused():
    rng = np.random.default_rng(0)
    d = 32
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    table = fit_novelty(_gaussian(rng, 400, d, mix), _gaussian(rng, 400, d, mix))
    assert table.source == "val" and table.target_rate == DEFAULT_TARGET_RATE and 0 < table.shrinkage < 1
    fresh = table.score(_gaussian(rng, 20000, d, mix))
    assert 0.005 <= np.mean(fresh > table.threshold) <= 0.05
    other = np.abs(rng.normal(size=(500, d))) * 20  # another distribution, not just a rescaled copy
    assert np.mean(table.score(other) > table.threshold) >= 0.95
    assert isinstance(table.score(other[0]), float)


def test_small_val_falls_back_to_heldout_train_scores():
    rng = np.random.default_rng(1)
    d = 64  # more dimensions than a fold's images: in-sample scores would be far too low
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    table = fit_novelty(_gaussian(rng, 60, d, mix), _gaussian(rng, 10, d, mix))
    assert table.source == "train-heldout" and table.n_calib == 60
    assert np.mean(table.score(_gaussian(rng, 5000, d, mix)) > table.threshold) <= 0.1


def test_group_folds_keep_an_item_out_of_the_fit_that_scores_it():
    rng = np.random.default_rng(2)
    groups = [f"item{i // 3:02d}" for i in range(60)]  # 20 items, three shots each
    folds = fold_of(60, 5, groups)
    assert all(len({f for f, g in zip(folds, groups) if g == name}) == 1 for name in set(groups))
    assert sorted(set(folds)) == [0, 1, 2, 3, 4] and (fold_of(60, 5, None) == np.arange(60) % 5).all()
    assert (fold_of(4, 5, ["a"] * 4) == np.arange(4) % 4).all()  # one item: index folds
    with pytest.raises(ValueError, match="3 groups for 4"):
        fold_of(4, 5, ["a", "b", "c"])
    # shots of one item nearly identical: a fit that saw a sibling scores the shot far too low
    d = 64
    items = np.abs(rng.normal(size=(20, d))) * 3 + 1
    x = np.repeat(items, 3, axis=0) + rng.normal(scale=0.01, size=(60, d))
    by_index = heldout_scores(unit_rows(x))
    by_group = heldout_scores(unit_rows(x), groups=groups)
    assert np.median(by_group) > 4 * np.median(by_index)  # measured: about 7x


def test_min_shrinkage_raises_the_floor_only():
    """min_shrinkage below Ledoit-Wolf's estimate changes nothing; above it the table's shrinkage is the floor
    and the score moves; 1.0 makes the score isotropic (the squared distance to the mean / (mu D))."""
    rng = np.random.default_rng(4)
    mix = np.diag(np.geomspace(3.0, 0.01, 24))
    train, test = _gaussian(rng, 80, 24, mix), _gaussian(rng, 10, 24, mix)
    plain = fit_novelty(train, None)
    assert 0.0 < plain.shrinkage < 0.5
    low = fit_novelty(train, None, min_shrinkage=plain.shrinkage / 2)
    np.testing.assert_array_equal(low.score(test), plain.score(test))
    high = fit_novelty(train, None, min_shrinkage=0.8)
    assert high.shrinkage == 0.8 and not np.allclose(high.score(test), plain.score(test))
    iso = fit_novelty(train, None, min_shrinkage=1.0)
    z = unit_rows(test) - iso.mean.astype(np.float64)
    mu = np.sum(np.var(unit_rows(train), axis=0)) / 24
    np.testing.assert_allclose(iso.score(test), np.sum(z * z, 1) / mu / 24, rtol=1e-4)


def test_table_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(2)
    table = fit_novelty(rng.random((30, 8)), None, 0.05)
    save_table(table, tmp_path / "n.npz")
    again = load_table(tmp_path / "n.npz")
    x = rng.random(8)
    assert again.threshold == table.threshold and again.source == table.source
    assert again.score(x) == pytest.approx(table.score(x), rel=1e-5)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(Exception, match="not a novelty table"):
        load_table(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="target rate"):
        fit_novelty(rng.random((30, 8)), None, 0.0)


# The float32 scores against the float64 path: measured at a few 1e-6 of the threshold on fitted tables up
# to D 2048 (benchmarks/bench_novelty.py); 1e-4 leaves room for other BLAS builds and is still 1000x inside
# the INT8 gate's NOVELTY_TOLERANCE (0.1 of the threshold).
FLOAT32_TOLERANCE = 1e-4


@pytest.mark.parametrize("projection", ["vecdot_projection", "einsum_projection"])
def test_float32_scores_match_the_float64_path(projection, monkeypatch):
    """A table of rank D (more train images than dimensions, the costly case) scores in-domain and shifted
    frames, one at a time (each projection the scanner may use) and batched, within FLOAT32_TOLERANCE of
    the threshold of the float64 score under the unrounded fit."""
    from edge_runtime import novelty

    if projection == "vecdot_projection" and not hasattr(np, "vecdot"):
        pytest.skip("numpy < 2 has no vecdot (the scanner uses einsum_projection there)")
    monkeypatch.setattr(novelty, "project_vector", getattr(novelty, projection))
    rng = np.random.default_rng(7)
    d = 256
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    train, frames = _gaussian(rng, 2 * d, d, mix), np.concatenate([_gaussian(rng, 100, d, mix),
                                                                 np.abs(rng.normal(size=(100, d))) * 20])
    table = fit_novelty(train, None)
    assert table.components.dtype == table.mean.dtype == np.float32 and table.components.shape == (d, d)
    mean, comps, weights, base, _ = novelty.shrunk_components(novelty.unit_rows(train))
    ref = novelty.mahalanobis(novelty.unit_rows(frames), mean, comps, weights, base)
    one = np.array([table.score(f.astype(np.float32)) for f in frames])
    for got in (one, table.score(frames)):
        assert np.max(np.abs(got - ref)) <= FLOAT32_TOLERANCE * table.threshold
    assert np.max(np.abs(one - ref)) > 0, "float32 rounding is there: the comparison can see a difference"


def test_an_old_float64_table_loads_as_float32_and_scores_as_before(tmp_path):
    """novelty.npz files holding float64 arrays (and checkpoints' float64 states) still load: the arrays
    are cast to float32 and the scores match the float64 path."""
    from edge_runtime import novelty
    from train.fit.novelty_fit import table_from_state

    rng = np.random.default_rng(8)
    table = fit_novelty(rng.random((40, 16)), None, 0.05)
    mean, comps, weights, base, _ = novelty.shrunk_components(novelty.unit_rows(rng.random((40, 16))))
    old = {"mean": mean, "components": comps, "weights": weights, "base": np.float64(base),
           "threshold": np.float64(table.threshold), "target_rate": np.float64(0.05), "shrinkage": np.float64(0.1),
           "source": np.array("train-heldout"), "n_train": np.int64(40), "n_calib": np.int64(40)}
    np.savez(tmp_path / "old.npz", **old)
    assert np.load(tmp_path / "old.npz")["components"].dtype == np.float64
    loaded = load_table(tmp_path / "old.npz")
    state = table_from_state({k: (v.item() if v.ndim == 0 else v) for k, v in old.items()})
    x = rng.random((5, 16))
    ref = novelty.mahalanobis(novelty.unit_rows(x), mean, comps, weights, base)
    for t in (loaded, state):
        assert t.components.dtype == t.mean.dtype == np.float32 and t.weights.dtype == np.float64
        assert np.allclose(t.score(x), ref, rtol=1e-5, atol=0) and t.score(x[0]) == pytest.approx(ref[0], rel=1e-5)


# ------------------------------------------------------------------- a trained model, end to end


FIT_GROUPS: list = []  # train_groups training handed to the novelty fit (trained_bundle)


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory):
    """A tiny model trained one epoch on the synthetic tags, exported (with its novelty table)."""
    import torch

    from export.bundle import ExportConfig, export_bundle
    from train.data.synth import generate_dataset
    from train.data.synth_config import SynthConfig
    from train.fit.config import TrainConfig
    from train.fit.trainer import train

    from train.fit import steps

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("novelty")
    generate_dataset(root / "data", SynthConfig(n=40, size=128), workers=1)
    real_fit = steps.fit_model_novelty

    def spy(*args):  # records the items the held-out folds are drawn by
        FIT_GROUPS.append(args[5])
        return real_fit(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(steps, "fit_model_novelty", spy)
        summary = train(TrainConfig(data=str(root / "data"), out=str(root / "run"), backbone="efficientnet_lite0",
                                    pretrained="auto", epochs=1, batch=8, threads=1, frame_size=128, global_size=64,
                                    crop_size=32, bg_replace=0.0, progress=False))
    export_bundle(root / "run" / "best.pt", root / "bundle", ExportConfig(parity_frames=3))
    return root, summary


def test_training_fits_and_export_ships_the_table(trained_bundle):
    from train.data.folders import index_folder

    root, summary = trained_bundle
    assert summary["novelty"]["target_rate"] == DEFAULT_TARGET_RATE and summary["novelty"]["dim"] == 1280
    # a val split this small: the threshold comes from held-out train scores, in folds by item
    assert summary["novelty"]["source"] == "train-heldout"
    train_groups = [s.group for s in index_folder(root / "data", seed=0).split("train")]
    assert FIT_GROUPS == [train_groups] and len(set(train_groups)) > 1
    man = load_bundle(root / "bundle").manifest  # verifies novelty.npz's sha256 too
    assert man.files[names.NOVELTY_FILE].graph == names.NOVELTY
    assert man.tensors["global"]["outputs"][names.GLOBAL_FEATURES] == [1, 1280]
    report = json.loads((root / "bundle" / names.REPORT_FILE).read_text())
    assert report["parity"]["graphs"]["max"]["features"] <= 1e-4



def test_training_fits_the_retake_gate_and_export_writes_it_into_the_manifest(trained_bundle):
    root, summary = trained_bundle
    n_train = len(list((root / "data" / "train").rglob("*.png")))
    assert summary["quality"]["n"] == n_train and summary["quality"]["reject_rate"] == FIT_REJECT_RATE
    man = load_bundle(root / "bundle").manifest
    assert man.quality == summary["quality"]
    gate = gate_for_bundle(man.quality)
    assert gate.thresholds() == summary["quality"]["thresholds"] and gate.enabled

def test_trained_model_refuses_noise_flat_and_another_generator(trained_bundle):
    from test_train import _image

    root, _ = trained_bundle
    rng = np.random.default_rng(3)
    frames = {
        "noise": [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(8)],
        "flat": [np.full((128, 128, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(8)],
        "other generator": [_image(rng, i % 2) for i in range(8)],
    }
    import cv2

    from edge_runtime.preprocess import list_images

    with ModelRunner.open(load_bundle(root / "bundle"), "ort") as runner:
        assert runner.novelty is not None and runner.notices == []
        for name, group in frames.items():
            decisions = [runner.run_frame(f).decision for f in group]
            assert decisions.count(UNKNOWN) >= 7, (name, decisions)
        own = [runner.run_frame(cv2.imread(str(p))) for p in list_images(root / "data" / "train")]
    assert all(r.novelty is not None and r.timings_ms["novelty"] > 0 for r in own)
    assert sum(r.decision == UNKNOWN for r in own) <= 0.1 * len(own)


def test_bench_has_a_novelty_stage_column(trained_bundle, tmp_path):
    from edge_runtime.bench import BenchConfig, format_table, run_bench

    root, _ = trained_bundle
    (row,) = run_bench(load_bundle(root / "bundle"), ["ort"], ["fp32"], BenchConfig(frames=3, warmup=1, threads=1))
    assert row.status == "ran" and row.stats["novelty"]["min"] > 0
    head = format_table([row]).splitlines()[0].split()
    assert head[head.index("vote") + 1] == "novelty"
    (plain,) = run_bench(load_bundle(make_fake_bundle(tmp_path / "b")), ["ort"], ["fp32"],
                         BenchConfig(frames=2, warmup=0, threads=1))
    assert plain.stats["novelty"]["p99"] == 0.0 and plain.stats["vote"]["min"] > 0  # no table: nothing to score


# ------------------------------------------------------------------------- without a novelty table


def test_bundle_without_table_runs_as_before_and_says_so_once(tmp_path):
    bundle = make_fake_bundle(tmp_path / "b")
    with ModelRunner.open(load_bundle(bundle), "ort") as runner:
        assert runner.novelty is None and runner.notices == [NO_NOVELTY]
        red, blue = runner.run_frame(make_image("red")), runner.run_frame(make_image("blue"))
    assert (red.decision, blue.decision) == ("genuine", "counterfeit") and red.novelty is None
    assert red.timings_ms["novelty"] == 0.0 and red.timings_ms["vote"] > 0
    (tmp_path / "img").mkdir()
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), make_image("red", seed=i))
    res = stderr_runner().invoke(scan_main, ["run", "--bundle", str(bundle), "--source",
                                                f"file://{tmp_path / 'img'}", "--out", str(tmp_path / "e.jsonl")])
    assert res.exit_code == 0, res.output
    assert res.stderr.count("cannot refuse") == 1 and len(res.stderr.splitlines()[0]) < 200
    evs = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    frames = [e for e in evs if e["type"] == "frame"]
    assert frames and all(e["novelty"] is None and e["decision"] == "genuine" for e in frames)


# ------------------------------------------------------------------------------ session and summary


def _tracker(**kw) -> SessionTracker:
    return SessionTracker(SessionConfig(gap_s=None, change_threshold=None, **kw), Thresholds(0.3, 0.7))


def test_session_of_mostly_unknown_frames_ends_unknown():
    t = _tracker(session_frames=5, min_frames=3)
    out = [t.add(0.1, i * 0.1, i, unknown=True) for i in range(3)]
    assert out[:2] == [None, None] and out[2].verdict == UNKNOWN and out[2].reason == "confident"


def test_a_minority_of_unknown_frames_does_not_decide_and_stays_out_of_the_vote():
    t = _tracker(session_frames=6, min_frames=3)
    assert t.add(0.95, 0.0, 0, unknown=True) is None
    assert t.add(0.05, 0.1, 1) is None and t.add(0.05, 0.2, 2) is None
    v = t.add(0.05, 0.3, 3)
    assert v.verdict == "genuine" and v.probability == pytest.approx(0.05)  # the unknown 0.95 left out
    t2 = _tracker(session_frames=4, min_frames=3)
    for i, unknown in enumerate((True, False, True, False)):  # half unknown: not "mostly"
        v2 = t2.add(0.5, i * 0.1, i, unknown=unknown)
    assert v2.verdict == "uncertain" and v2.reason == "frame limit"
    t3 = _tracker(session_frames=10, min_frames=3)
    for i, unknown in enumerate((True, True, False)):
        t3.add(0.5, i * 0.1, i, unknown=unknown)
    assert t3.flush().verdict == UNKNOWN


def test_summary_and_audit_count_unknown(tmp_path):
    verdicts = [events.verdict_event(f"s{i}", i, "m", v, 0.5, 3, "confident", item=str(tmp_path / f"{i}.png"))
                for i, v in enumerate(("genuine", UNKNOWN, UNKNOWN, "counterfeit"))]
    labels = {str((tmp_path / f"{i}.png").resolve()): c
              for i, c in enumerate(("genuine", "genuine", "counterfeit", "counterfeit"))}
    s = summarise(verdicts, [], ScanStats(verdicts=4), 1.0, labels, ("genuine", "counterfeit"))
    assert s["by_verdict"][UNKNOWN] == 2 and s["confusion"]["genuine"][UNKNOWN] == 1
    assert s["coverage"] == 0.5 and s["accuracy"] == 0.5 and s["accuracy_decided"] == 1.0
    text = format_summary(s)
    assert f"{UNKNOWN} 2" in text and UNKNOWN in text.splitlines()[-3]
    with AuditLog(tmp_path / "audit.db") as log:
        rel = log.record(verdicts[1], make_image("grey"))
    assert rel is not None and (tmp_path / rel).is_file()


# ------------------------------------------------------------------------------ mgfen-eval --ood


def test_wilson_interval():
    from train.evaluate.ood import wilson

    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161, abs=1e-3)
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(1 - hi) and 0.29 < lo < 0.3


def test_eval_ood_reports_refusal_and_false_refusal(trained_bundle, tmp_path):
    import cv2

    from train.cli.mgfen_eval import main as eval_main

    root, _ = trained_bundle
    rng = np.random.default_rng(4)
    (tmp_path / "ood").mkdir()
    for i in range(6):
        cv2.imwrite(str(tmp_path / "ood" / f"{i}.png"), rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    args = ["--ckpt", str(root / "run" / "best.pt"), "--data", str(root / "data"), "--samples", "0"]
    res = CliRunner().invoke(eval_main, [*args, "--ood", str(tmp_path / "ood"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout[res.stdout.index("{"):])["ood"]
    assert rep["ood"]["n"] == 6 and rep["ood"]["refused"] >= 5 and rep["ood"]["ci95"][0] > 0.3
    assert rep["in_domain"]["n"] > 0 and rep["in_domain"]["rate"] <= 0.25
    bad = CliRunner().invoke(eval_main, [*args, "--ood", str(tmp_path / "missing")])
    assert bad.exit_code != 0 and "no such folder" in bad.output and "Traceback" not in bad.output


def test_eval_ood_out_writes_the_score_histogram(trained_bundle, tmp_path):
    import cv2

    from train.cli.mgfen_eval import main as eval_main
    from train.evaluate.ood_histogram import HISTOGRAM_FILE, OOD_COLOUR, THRESHOLD_COLOUR

    root, _ = trained_bundle
    (tmp_path / "flat").mkdir()
    for i in range(4):
        cv2.imwrite(str(tmp_path / "flat" / f"{i}.png"), np.full((128, 128, 3), 40 * i, np.uint8))
    out = tmp_path / "eval"
    res = CliRunner().invoke(eval_main, ["--ckpt", str(root / "run" / "best.pt"), "--data", str(root / "data"),
                                         "--samples", "0", "--ood", str(tmp_path / "flat"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    picture = out / HISTOGRAM_FILE
    assert f"novelty score histogram -> {picture}" in res.output
    rep = json.loads((out / "report.json").read_text())["ood"]  # report.json has the --ood part too
    hist = rep["histogram"]
    assert hist["file"] == str(picture) and len(hist["edges"]) == len(hist["ood"]) + 1
    assert sum(hist["ood"]) == rep["ood"]["n"] == 4 and sum(hist["in_domain"]) == rep["in_domain"]["n"]
    img = cv2.imread(str(picture))
    assert img is not None and img.shape[2] == 3
    colours = {tuple(int(c) for c in px) for px in img.reshape(-1, 3)}
    assert THRESHOLD_COLOUR in colours and OOD_COLOUR in colours


def test_histogram_bins_cover_every_score_and_the_threshold(tmp_path):
    from train.evaluate.ood_histogram import IN_COLOUR, THRESHOLD_COLOUR, draw, histogram

    own, ood = np.array([0.8, 1.0, 1.1, 1.3]), np.array([40.0, 900.0, 0.0])  # a zero score: first bin
    hist = histogram(own, ood, threshold=2.0, bins=10)
    edges = np.array(hist["edges"])
    assert len(edges) == 11 and np.all(np.diff(edges) > 0) and edges[-1] > 900 and edges[0] < 0.8
    assert sum(hist["in_domain"]) == 4 and sum(hist["ood"]) == 3 and hist["ood"][0] == 1
    assert histogram(own, np.zeros(0), 2.0, bins=10)["ood"] == [0] * 10
    draw(hist, 2.0, tmp_path / "h.png", ("own", "ood"))
    import cv2

    img = cv2.imread(str(tmp_path / "h.png"))
    red = np.all(img == THRESHOLD_COLOUR, axis=2)
    assert red.sum(axis=0).max() > 0.5 * img.shape[0], "the threshold is a full-height line"
    assert np.all(img == IN_COLOUR, axis=2).any()
    with pytest.raises(OSError, match="cannot write"):
        draw(hist, 2.0, tmp_path / "missing" / "h.png")


# -------------------------------------------------------------------------- mgfen-train --novelty-rate


def test_train_novelty_rate_reaches_the_config_and_bad_values_are_one_line(tmp_path, monkeypatch):
    from train.cli.mgfen_train import main as train_main
    from train.fit import trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg: seen.append(cfg) or {"out": cfg.out})
    args = ["--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert CliRunner().invoke(train_main, args + ["--novelty-rate", "0.1"]).exit_code == 0
    assert CliRunner().invoke(train_main, args).exit_code == 0
    assert [c.novelty_rate for c in seen] == [0.1, DEFAULT_TARGET_RATE]
    help_text = " ".join(CliRunner().invoke(train_main, ["--help"]).output.split())
    assert f"= 2%) whose novelty score it refuses (edge_runtime/novelty.py). [default: {DEFAULT_TARGET_RATE}]" in help_text
    for bad in ("2", "0", "-0.1", "0.5"):
        res = CliRunner().invoke(train_main, args + ["--novelty-rate", bad])
        lines = res.output.strip().splitlines()
        assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: --novelty-rate: "), res.output
        assert "(0, 0.5)" in lines[0] and "Traceback" not in res.output
    assert len(seen) == 2, "a bad rate is refused before training"


# ---------------------------------------------------------------------------------- INT8 against FP32


@pytest.fixture(scope="module")
def int8_bundle(trained_bundle):
    """The trained model exported with TensorRT-flavour INT8 files (the real quantiser, 4 calibration images);
    the export's gate compares the novelty scores on the val split."""
    from export.bundle import ExportConfig, export_bundle

    root, _ = trained_bundle
    out = root / "bundle_int8"
    report = export_bundle(root / "run" / "best.pt", out, ExportConfig(
        parity_frames=3, int8=True, calib=root / "data", calib_n=4, calib_method="minmax", int8_flavours=("trt",),
        force=True))
    return out, report


def test_int8_novelty_scores_agree_with_fp32_within_the_tolerance(trained_bundle, int8_bundle):
    """The gate's novelty numbers for the TensorRT flavour, recomputed here from each graph's own pooled
    features; and frames unlike the training set are unknown in both precisions."""
    from calibration.accuracy import OrtPipeline, PipelineParams
    from calibration.verdict_gate import NOVELTY_TOLERANCE
    from edge_runtime.preprocess import load_frame, prepare_frame

    root, _ = trained_bundle
    out, report = int8_bundle
    gate = report["int8"]["gate"]
    nov = gate["flavours"]["trt"]["novelty"]
    assert nov["within_tolerance"] and nov["abs_dscore_rel"]["p99"] <= NOVELTY_TOLERANCE == nov["tolerance"]
    assert nov["unknown_agreement"] == 1.0 and nov["unknown_changed"] == 0
    man = load_bundle(out).manifest
    table = load_table(out / names.NOVELTY_FILE)
    params = PipelineParams(man.preprocess, man.global_weight, man.use_parts, man.positive_index)
    fp32 = OrtPipeline(out / names.model_file("global"), out / names.model_file("parts"), params)
    int8 = OrtPipeline(out / names.model_file("global", "int8", "trt"), out / names.model_file("parts", "int8", "trt"),
                       params, simulate_qdq=True)

    def scores(frames):
        return (table.score(np.stack([fp32.run_frame(f).features for f in frames])),
                table.score(np.stack([int8.run_frame(f).features for f in frames])))

    val = [load_frame(root / "data" / "val" / p, man.preprocess) for p in gate["images"]["paths"]]
    s32, s8 = scores(val)
    rel = np.abs(s8 - s32) / table.threshold
    assert nov["abs_dscore_rel"]["max"] == pytest.approx(rel.max(), abs=1e-5) and rel.max() > 0
    assert nov["fp32_unknown"] == int(np.sum(s32 > table.threshold))
    rng = np.random.default_rng(5)
    odd = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(3)]
    odd += [np.full((128, 128, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(3)]
    o32, o8 = scores([prepare_frame(f, man.preprocess) for f in odd])
    assert np.all(o32 > table.threshold) and np.all(o8 > table.threshold)
