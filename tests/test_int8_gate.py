"""The INT8 gate (issue 18) without torch: the verdict numbers and criteria (calibration.verdict_gate), the
manifest's int8_gate record (round trip, older manifests, bad records) and how the runtime honours it:
`auto` precision skips an INT8 flavour that did not pass, `--precision int8` runs it and says so in its
first line and in every event's `model`. The export side (a planted INT8 file refused, forced, a bundle
without val unverified) is in test_export.py."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from calibration.verdict_gate import (NOVELTY_TOLERANCE, GateCriteria, Scores, compare_verdicts, judge,
                                     positive_log_odds)
from edge_runtime import names
from edge_runtime.bundle.manifest import MANIFEST_FILE, load_bundle
from edge_runtime.cli.bench_cli import main as bench_main
from edge_runtime.cli.scan_cli import main as scan_main
from edge_runtime.errors import BundleError
from edge_runtime.model_runner import ModelRunner
from edge_runtime.roi import Thresholds
from cli_runner import stderr_runner
from fake_bundle import make_fake_bundle, make_image

TH = Thresholds(0.3, 0.7)


def scores(probs, novelty=None) -> Scores:
    p = np.asarray(probs, np.float64)
    return Scores(p, np.log(p / (1 - p)), (p >= 0.5).astype(np.int64),
                  None if novelty is None else np.asarray(novelty, np.float64))


def test_verdict_numbers_count_changed_verdicts_at_the_thresholds():
    """100 images: FP32 decides 50 genuine (P 0.1) and 50 counterfeit (P 0.9). A shift that stays on the
    same side of every threshold changes no verdict however large |dP| is; each image pushed into the
    abstain band costs agreement and accuracy."""
    labels = np.array([0] * 50 + [1] * 50)
    ref = scores([0.1] * 50 + [0.9] * 50)
    same_side = compare_verdicts(ref, scores([0.29] * 50 + [0.71] * 50), labels, TH, 1)
    assert same_side["agreement"] == 1.0 and same_side["drop_points"] == 0.0
    assert same_side["abs_dp"]["max"] == pytest.approx(0.19) and judge(same_side, GateCriteria()) is None
    one = compare_verdicts(ref, scores([0.1] * 49 + [0.45] + [0.9] * 50), labels, TH, 1)
    assert one["agreement"] == 0.99 and one["verdicts_changed"] == 1 and one["drop_points"] == pytest.approx(1.0)
    assert one["accuracy"] == 0.99 and one["fp32_accuracy"] == 1.0 and one["argmax_drop_points"] == 0.0
    assert one["abs_dp"]["p50"] == 0.0 and one["abs_dp"]["max"] == pytest.approx(0.35)
    assert one["abs_dlogodds"]["max"] == pytest.approx(math.log(0.45 / 0.55) + math.log(9))
    # 99% agreement passes the default agreement criterion; its 1-point drop fails the 0.5-point one
    assert judge(one, GateCriteria()) == "accuracy drop 1.00 points (> 0.5)"
    assert judge(one, GateCriteria(max_drop_points=1.0)) is None
    two = compare_verdicts(ref, scores([0.1] * 48 + [0.5, 0.5] + [0.9] * 50), labels, TH, 1)
    assert judge(two, GateCriteria(max_drop_points=5)).startswith("verdicts equal FP32's on 98.0% of 100")
    assert judge(two, GateCriteria(min_agreement=0.98, max_drop_points=5)) is None


def test_unknown_decisions_count_in_the_verdict_agreement():
    """100 genuine images, all P 0.1; novelty threshold 2.0. FP32 scores two of them above it (unknown). The
    INT8 scores move every frame by 0.04 (2% of the threshold) and one unknown frame to 1.9: that frame's
    verdict changed (unknown -> genuine), although its probability did not move."""
    labels = np.zeros(100, np.int64)
    fp32_scores = np.array([1.0] * 98 + [3.0, 3.0])
    int8_scores = fp32_scores + 0.04
    int8_scores[98] = 1.9
    ref, other = scores([0.1] * 100, fp32_scores), scores([0.1] * 100, int8_scores)
    n = compare_verdicts(ref, other, labels, TH, 1, novelty_threshold=2.0)
    assert n["agreement"] == 0.99 and n["verdicts_changed"] == 1 and n["abs_dp"]["max"] == 0.0
    assert n["fp32_accuracy"] == 0.98 and n["accuracy"] == 0.99  # unknown counts as not deciding the label
    nov = n["novelty"]
    assert nov["threshold"] == 2.0 and nov["unknown_changed"] == 1 and nov["unknown_agreement"] == 0.99
    assert (nov["fp32_unknown"], nov["unknown"]) == (2, 1)
    assert nov["abs_dscore_rel"]["p50"] == pytest.approx(0.02) and nov["abs_dscore_rel"]["max"] == pytest.approx(0.55)
    # one frame in 100 is past the p99: the scores agree within the tolerance, the changed verdict still counts
    assert nov["abs_dscore_rel"]["p99"] < NOVELTY_TOLERANCE and nov["within_tolerance"] is True
    assert judge(n, GateCriteria(min_agreement=1.0, max_drop_points=5)) == (
        "verdicts equal FP32's on 99.0% of 100 val images (< 100%), 1 of them unknown in one precision only")
    far = compare_verdicts(ref, scores([0.1] * 100, fp32_scores + 0.3), labels, TH, 1, novelty_threshold=2.0)
    assert far["agreement"] == 1.0 and far["novelty"]["abs_dscore_rel"]["p50"] == pytest.approx(0.15)
    assert far["novelty"]["tolerance"] == NOVELTY_TOLERANCE and far["novelty"]["within_tolerance"] is False
    # without a novelty table (or scores) the record says so and only the probabilities decide
    plain = compare_verdicts(ref, other, labels, TH, 1)
    assert plain["novelty"] is None and plain["agreement"] == 1.0 and plain["fp32_accuracy"] == 1.0


def test_log_odds_come_from_the_logits():
    logits = np.array([0.3, 2.0], np.float32)
    p = 1 / (1 + math.exp(-(2.0 - 0.3)))
    assert positive_log_odds(logits, 1) == pytest.approx(math.log(p / (1 - p)))
    assert positive_log_odds(np.array([0.0, 60.0, 0.0]), 1) == pytest.approx(60 - math.log(2))  # P ~ 1: finite


def test_criteria_out_of_range_are_refused():
    from calibration import CalibrationError

    with pytest.raises(CalibrationError, match="min-int8-agreement"):
        GateCriteria(min_agreement=1.01)
    with pytest.raises(CalibrationError, match="max-int8-drop"):
        GateCriteria(max_drop_points=-1)


# ------------------------------------------------------------------------------------------ manifest


def test_manifest_round_trips_the_record(tmp_path):
    root = make_fake_bundle(tmp_path / "b", int8=True, int8_status="failed-forced")
    man = load_bundle(root).manifest
    assert man.int8_status("cpu") == man.int8_status("trt") == "failed-forced"
    data = json.loads((root / MANIFEST_FILE).read_text())
    assert data["int8_gate"] == man.int8_gate and type(man).from_dict(man.to_dict()) == man


def test_an_old_manifest_without_the_record_loads_as_unverified(tmp_path):
    root = make_fake_bundle(tmp_path / "b", int8=True)
    path = root / MANIFEST_FILE
    data = json.loads(path.read_text())
    del data["int8_gate"]  # written before the gate existed
    path.write_text(json.dumps(data))
    man = load_bundle(root).manifest
    assert man.int8_gate is None and man.int8_status("cpu") == man.int8_status("trt") == "unverified"


def test_a_bad_record_is_a_one_line_error(tmp_path):
    root = make_fake_bundle(tmp_path / "b", int8=True)
    path = root / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["int8_gate"]["flavours"]["cpu"]["status"] = "fine"
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="int8_gate.flavours.cpu: status must be one of passed"):
        load_bundle(root)


# ------------------------------------------------------------------------------------------- runtime


@pytest.mark.parametrize("status,runs", [("passed", "int8"), ("failed-forced", "fp32"), ("unverified", "fp32"),
                                         (None, "fp32")])
def test_auto_runs_int8_only_when_its_gate_passed(tmp_path, status, runs):
    bundle = load_bundle(make_fake_bundle(tmp_path / "b", int8=True, int8_status=status))
    with ModelRunner.open(bundle, "ort", None) as runner:
        files = [b.path.name for b in (runner.global_backend, runner.parts_backend)]
        expected = [names.model_file(g, "int8", "cpu") if runs == "int8" else names.model_file(g) for g in names.GRAPHS]
        assert files == expected
        assert runner.model_record == bundle.model_id, "fp32 or a passed INT8 file is the plain model id"
        if runs == "int8":
            assert runner.precision_notes == []
        else:
            (note,) = runner.precision_notes  # one line for both graphs
            assert note.startswith("auto precision runs fp32, not the cpu-flavour INT8 files: they are "
                                   f"{status or 'unverified'}")


def _scan(bundle_dir, folder, *extra):
    return stderr_runner().invoke(scan_main, ["run", "--bundle", str(bundle_dir), "--source", f"file://{folder}",
                                          "--no-prefetch", "--session-frames", "1", "--min-frames", "1", *extra])


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, colour in enumerate(("red", "blue")):
        cv2.imwrite(str(folder / f"{i}.png"), make_image(colour, seed=i))
    return folder


def test_forced_int8_is_labelled_in_the_scanners_output(tmp_path, images):
    """--precision int8 runs a failed-forced file: the scanner's first line says so, and every event's
    model names it; a passed file leaves both as they were."""
    forced = make_fake_bundle(tmp_path / "forced", int8=True, int8_status="failed-forced")
    res = _scan(forced, images, "--precision", "int8")
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[0] == ("warning: --precision int8 runs the cpu-flavour INT8 files although they "
                                          "are failed-forced (their export gate failed: fake bundle: failed-forced; "
                                          "--force kept them)")
    evs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    model_id = load_bundle(forced).model_id
    assert {e["type"] for e in evs} >= {"frame", "verdict"}
    assert {e["model"] for e in evs} == {f"{model_id}+int8-cpu-failed-forced"}

    passed = make_fake_bundle(tmp_path / "passed", int8=True)
    res = _scan(passed, images, "--precision", "int8")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr
    evs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert evs and {e["model"] for e in evs} == {load_bundle(passed).model_id}


def test_auto_says_once_why_it_runs_fp32(tmp_path, images):
    bundle = make_fake_bundle(tmp_path / "b", int8=True, int8_status="unverified")
    res = _scan(bundle, images)
    assert res.exit_code == 0, res.output
    lines = [line for line in res.stderr.splitlines() if "auto precision runs fp32" in line]
    assert len(lines) == 1 and res.stderr.splitlines()[0] == lines[0]
    assert "fp32 (global.onnx)" in res.stderr
    res = stderr_runner().invoke(bench_main, ["--bundle", str(bundle), "--frames", "2", "--warmup", "0",
                                          "--backend", "ort", "--json", "-"])
    assert res.exit_code == 0, res.output
    assert sum("auto precision runs fp32" in line for line in res.stderr.splitlines()) == 1
    assert json.loads(res.stdout[res.stdout.index("{"):])["rows"][0]["engines"] == [
        f"ort:CPUExecutionProvider:{names.model_file(g)}" for g in names.GRAPHS]


def test_gate_measures_fp32_repeatability_under_pixel_noise(tmp_path):
    """run_gate also runs FP32 on every frame plus seeded 1-grey-level noise. Strongly coloured frames keep
    their verdicts (agreement 1, |d log-odds| > 0: the noise reached the model); six copies of one grey frame whose
    P sits on counterfeit_at flip both ways, so FP32 misses the criterion itself, and the failure line of a
    flavour says so. repeat_noise=0 skips the check."""
    from calibration.accuracy import bundle_pipelines
    from calibration.verdict_gate import REPEAT_NOISE, run_gate
    from edge_runtime.preprocess import load_frame

    bundle = make_fake_bundle(tmp_path / "b", int8=True)
    man, params, pipes = bundle_pipelines(bundle)
    val = tmp_path / "val"
    for label, colour in (("genuine", "red"), ("counterfeit", "blue")):
        (val / label).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(val / label / f"{colour}{i}.png"), make_image(colour, seed=i))
    fp32 = pipes.pop("fp32")
    steady = run_gate(fp32, pipes, val, params.preprocess, names.CLASS_NAMES, TH, 1, GateCriteria(), force=False)
    rep = steady.repeatability
    assert rep["noise"] == REPEAT_NOISE and rep["n"] == 6 and rep["agreement"] == 1.0 and rep["abs_dlogodds"]["max"] > 0
    assert steady.failure is None and steady.summary[0].startswith("FP32 against itself under 1 grey level")
    assert run_gate(fp32, pipes, val, params.preprocess, names.CLASS_NAMES, TH, 1, GateCriteria(), force=False,
                    repeat_noise=0.0).repeatability is None

    grey = tmp_path / "grey"
    (grey / "counterfeit").mkdir(parents=True)
    for i in range(6):
        cv2.imwrite(str(grey / "counterfeit" / f"g{i}.png"), make_image("grey", seed=0))
    p_grey = fp32.run_frame(load_frame(grey / "counterfeit" / "g0.png", params.preprocess)).probability
    on_edge = Thresholds(0.01, p_grey)
    shaky = run_gate(fp32, pipes, grey, params.preprocess, names.CLASS_NAMES, on_edge, 1,
                     GateCriteria(), force=False)
    assert 0.0 < shaky.repeatability["agreement"] < 1.0
    assert shaky.failure is None  # the INT8 files are the FP32 ones: they agree; FP32's repeatability is not gated
    numbers = {"agreement": 0.5, "n": 6, "drop_points": 0.0}
    assert "FP32 itself keeps" in judge(numbers, GateCriteria(), shaky.repeatability)
    assert "FP32 itself" not in judge(numbers, GateCriteria(), steady.repeatability)
