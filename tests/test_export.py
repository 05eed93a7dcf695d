"""mgfen-export on a tiny model: bundle layout and manifest, ONNX parity on different frames (and its
failure on a graph that froze data-dependent values), runtime-path parity on a folder, INT8 files and
gate, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from calibration import cpu_features
from calibration.accuracy import OrtPipeline, PipelineParams
from calibration.lint import lint_trt
from calibration.quantize import descendants_of_output
from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle, sha256_file
from edge_runtime.preprocess import PreprocessConfig, list_images
from edge_runtime.roi import Thresholds
from export import ExportError
from export import bundle as bundle_mod
from export.cli import main
from export.onnx_export import export_module
from export.parity import check_graph_parity, check_runtime_parity, frames_from, torch_probability
from train.data.synth import generate_dataset
from train.data.synth_config import SynthConfig
from train.model.checkpoint import save_checkpoint
from train.model.mgfen import ModelConfig, build_model

PRE = PreprocessConfig(frame_size=128, global_size=64, crop_size=32)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    generate_dataset(root / "data", SynthConfig(n=20, size=128), workers=1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet18", fpn_channels=16, preprocess=PRE), pretrained=None).eval()
    ckpt = root / "ckpt.pt"
    save_checkpoint(ckpt, model, list(names.CLASS_NAMES), metrics={"accuracy": 0.5}, data_hash="d" * 16)
    return root, model, ckpt


@pytest.fixture(scope="module")
def exported(work):
    """The tiny model exported with both INT8 flavours, on an injected x86 CPU with AVX2 only (no VNNI:
    the default --reduce-range auto must pick 7-bit weights for the cpu flavour)."""
    root, model, ckpt = work
    out = root / "bundle"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cpu_features, "read_cpu_flags", lambda path="/proc/cpuinfo": frozenset({"sse2", "avx2", "fma"}))
        mp.setattr(cpu_features, "platform", SimpleNamespace(machine=lambda: "x86_64"))
        res = CliRunner().invoke(main, [str(ckpt), "--out", str(out), "--int8", "--calib", str(root / "data"),
                                        "--calib-n", "4", "--calib-method", "minmax", "--force", "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout[res.stdout.index("{"):])


def val_frames(root: Path, count: int = 4):
    return frames_from(list_images(root / "data" / "val")[:count], PRE)


def test_bundle_layout_and_manifest(work, exported):
    root, model, ckpt = work
    out, report = exported
    b = load_bundle(out)  # verifies every sha256
    man = b.manifest
    assert sorted(man.files) == sorted(
        [names.model_file(g) for g in names.GRAPHS]
        + [names.model_file(g, "int8", f) for g in names.GRAPHS for f in ("cpu", "trt")])
    assert man.tensors["global"] == {
        "inputs": {names.GLOBAL_INPUT: [1, 3, 64, 64]},
        "outputs": {names.GLOBAL_LOGITS: [1, 2], names.HEATMAP: [1, 1, 16, 16], names.BOXES: [1, 4, 4],
                    names.BOX_SCORES: [1, 4], names.GLOBAL_FEATURES: [1, 512]}}
    assert man.tensors["parts"] == {"inputs": {names.PARTS_INPUT: [4, 3, 32, 32]},
                                    "outputs": {names.PART_LOGITS: [4, 2]}}
    assert man.preprocess == PRE and man.k == 4 and man.box_size == 32 / 128
    assert man.provenance["checkpoint_sha256"] == sha256_file(ckpt)
    assert man.provenance["data_hash"] == "d" * 16 and man.provenance["metrics"] == {"accuracy": 0.5}
    cal = man.calibration
    assert cal["method"] == "minmax" and cal["n"] == 4
    train_hashes = {sha256_file(p) for p in list_images(root / "data" / "train")}
    assert {im["sha256"] for im in cal["images"]} <= train_hashes
    for rel, digest in cal["samples"].items():
        assert sha256_file(out / rel) == digest
    assert report["parity"]["graphs"]["passed"] and report["parity"]["runtime"]["passed"]
    gate = report["int8"]["gate"]
    val = list_images(root / "data" / "val")
    assert gate["images"]["n"] == len(val) and set(gate["flavours"]) == {"cpu", "trt"}
    assert gate["images"]["paths"] == [p.relative_to(root / "data" / "val").as_posix() for p in val]
    assert {e["status"] for e in gate["flavours"].values()} <= {"passed", "failed-forced"}
    assert man.int8_gate == gate == json.loads((out / names.REPORT_FILE).read_text())["int8"]["gate"]


def _conv_weights(model: onnx.ModelProto) -> list[np.ndarray]:
    """The int8 weights of the Conv nodes of a QDQ graph (quantised offline or through a Q/DQ pair)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    weights = []
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        dq = producers.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if dq.input[0] in inits:
            weights.append(inits[dq.input[0]])
        elif q is not None and q.op_type == "QuantizeLinear":  # trt: a Q/DQ pair on the FP32 weight
            w, scale = inits[q.input[0]], inits[q.input[1]].reshape(-1, *[1] * (inits[q.input[0]].ndim - 1))
            weights.append(np.clip(np.round(w / scale), -128, 127).astype(np.int8))
    return weights


def test_cpu_flavour_records_reduce_range_and_the_search(exported):
    """On a CPU without VNNI (injected) auto picks 7-bit weights for the cpu flavour (onnxruntime's
    [-64, 64]) and full 8-bit for trt; the manifest records the choice and, per flavour, the method, the
    nodes kept FP32 and the gate numbers before and after the search."""
    out, report = exported
    cal = load_bundle(out).manifest.calibration
    choice = cal["reduce_range"]
    assert choice["reduce_range"] is True and choice["mode"] == "auto" and "without VNNI" in choice["reason"]
    assert choice["cpu_flags"] == ["avx2"] and choice["machine"] == "x86_64"
    assert cal["flavours"]["cpu"]["reduce_range"] is True and cal["flavours"]["trt"]["reduce_range"] is False
    for graph in names.GRAPHS:
        cpu = _conv_weights(onnx.load(str(out / names.model_file(graph, "int8", "cpu"))))
        trt = _conv_weights(onnx.load(str(out / names.model_file(graph, "int8", "trt"))))
        assert cpu and max(int(np.abs(w.astype(np.int16)).max()) for w in cpu) == 64
        assert trt and max(int(np.abs(w.astype(np.int16)).max()) for w in trt) == 127
        assert report["int8"]["files"][names.model_file(graph, "int8", "cpu")]["reduce_range"] is True
    gate = report["int8"]["gate"]["flavours"]
    for flavour, entry in cal["flavours"].items():
        assert entry["method"] == "minmax" and entry["trials"] == len(report["int8"]["trials"][flavour]) >= 1
        assert entry["gate_before"]["n"] == gate[flavour]["n"]
        assert entry["gate_after"]["agreement"] == gate[flavour]["agreement"]
        kept = [n["node"] for n in entry["kept_fp32"]]
        files = [report["int8"]["files"][names.model_file(g, "int8", flavour)] for g in names.GRAPHS]
        assert sorted(kept) == sorted(n for f in files for n in f["fallback_fp32_nodes"])


def test_int8_gate_numbers_by_hand(work, exported):
    """The gate's numbers for the CPU flavour, recomputed here: FP32 from torch (the export's reference
    model), INT8 from the bundle's CPU-flavour files, verdicts from the manifest's thresholds, labels from
    the folder names."""
    root, model, _ = work
    out, report = exported
    entry = report["int8"]["gate"]["flavours"]["cpu"]
    th = load_bundle(out).manifest.thresholds
    paths = list_images(root / "data" / "val")
    truth = np.array(["counterfeit" if p.parent.name == "counterfeit" else "genuine" for p in paths])
    frames = frames_from(paths, PRE)
    p_fp32 = np.array([torch_probability(model, f, 1) for f in frames])
    int8 = OrtPipeline(out / names.model_file("global", "int8", "cpu"), out / names.model_file("parts", "int8", "cpu"),
                       PipelineParams(PRE, float(model.cfg.global_weight), True, 1))
    p_int8 = np.array([int8.run_frame(f).probability for f in frames])
    v_fp32, v_int8 = np.array([th.decide(p) for p in p_fp32]), np.array([th.decide(p) for p in p_int8])
    # onnxruntime FP32 and torch agree within 1e-3 (the parity gate): only a frame that close to a threshold
    # may be decided differently by the gate's FP32 pipeline than by torch here
    near = np.min(np.abs(p_fp32[:, None] - np.array([th.genuine_at, th.counterfeit_at])[None]), axis=1) < 1e-3
    slack = float(np.mean(near))
    assert entry["n"] == len(paths)
    assert abs(entry["agreement"] - np.mean(v_int8 == v_fp32)) <= slack + 1e-9
    assert entry["accuracy"] == pytest.approx(np.mean(v_int8 == truth), abs=1e-6)
    assert abs(entry["fp32_accuracy"] - np.mean(v_fp32 == truth)) <= slack + 1e-9
    assert entry["drop_points"] == pytest.approx(100 * (entry["fp32_accuracy"] - entry["accuracy"]), abs=1e-3)
    assert abs(entry["abs_dp"]["max"] - np.abs(p_int8 - p_fp32).max()) <= 1e-3 + 1e-6
    assert entry["abs_dp"]["p50"] <= entry["abs_dp"]["p99"] <= entry["abs_dp"]["max"]


def test_int8_files_follow_their_flavour(exported):
    out, _ = exported
    for graph in names.GRAPHS:
        trt = onnx.load(str(out / names.model_file(graph, "int8", "trt")))
        assert lint_trt(trt) == []
        cpu = onnx.load(str(out / names.model_file(graph, "int8", "cpu")))
        assert any(p.rule == "signed" for p in lint_trt(cpu)), "CPU flavour has uint8 activations"
    # the box-picking tail after the heatmap stays FP32 (no Q/DQ inside it)
    g = onnx.load(str(out / names.model_file("global", "int8", "trt")))
    tail = set(descendants_of_output(g, names.HEATMAP))
    assert tail and not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in g.graph.node
                            if n.name in tail)


def test_graph_parity_on_different_frames(work, exported):
    root, model, _ = work
    out, _ = exported
    rep = check_graph_parity(model, out / "global.onnx", out / "parts.onnx", val_frames(root))
    assert rep["passed"], rep["failures"]
    assert rep["max"]["global_prob"] <= 1e-4 and rep["max"]["part_prob"] <= 1e-4 and rep["max"]["boxes"] == 0
    assert rep["distinct_torch_boxes"] >= 2, "frames must lead to different boxes for the check to mean anything"


class FrozenBoxes(torch.nn.Module):
    """A wrong export: boxes taken out of the graph through numpy, so the tracer stores them as constants."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        logits, heat, boxes, scores = self.model.global_forward(image)
        return logits, heat, torch.from_numpy(boxes.detach().numpy().copy()), scores


def test_frozen_graph_fails_parity(work, exported, tmp_path):
    root, model, _ = work
    out, _ = exported
    frames = val_frames(root)
    # trace on the first frame's view, the way a careless export would
    from edge_runtime.preprocess import global_input

    example = torch.from_numpy(global_input(frames[0], PRE))
    export_module(FrozenBoxes(model), example, tmp_path / "frozen.onnx", names.GLOBAL_INPUT,
                  names.GLOBAL_OUTPUTS, 17)
    rep = check_graph_parity(model, tmp_path / "frozen.onnx", out / "parts.onnx", frames)
    assert not rep["passed"]
    assert any("boxes differ" in f for f in rep["failures"])


def test_parity_refuses_too_few_or_equal_frames(work, exported):
    root, model, _ = work
    out, _ = exported
    frames = val_frames(root, 3)
    with pytest.raises(ExportError, match="at least 3"):
        check_graph_parity(model, out / "global.onnx", out / "parts.onnx", frames[:2])
    with pytest.raises(ExportError, match="different"):
        check_graph_parity(model, out / "global.onnx", out / "parts.onnx", [frames[0]] * 3)


def test_runtime_path_matches_torch_on_a_folder(work, exported):
    root, model, _ = work
    out, _ = exported
    man = load_bundle(out).manifest
    pipe = OrtPipeline(out / "global.onnx", out / "parts.onnx",
                       PipelineParams(man.preprocess, man.global_weight, man.use_parts, man.positive_index))
    frames = frames_from(list_images(root / "data" / "test"), PRE)
    rep = check_runtime_parity(model, pipe, frames, man.positive_index)
    assert rep["passed"] and rep["frames"] == len(frames) >= 4
    assert rep["max_abs_prob_diff"] <= 1e-3


def negated_logits(src: Path, dest: Path, output: str) -> None:
    """Copy ONNX file `src` to `dest` with its `output` logits negated: for 2 classes P(counterfeit)
    becomes 1 - P, so at thresholds 0.5/0.5 every verdict flips."""
    model = onnx.load(str(src))
    for node in model.graph.node:
        node.output[:] = [f"{output}_raw" if o == output else o for o in node.output]
    model.graph.node.append(onnx.helper.make_node("Neg", [f"{output}_raw"], [output]))
    onnx.save(model, str(dest))


def _fast_int8(monkeypatch, flip: tuple[str, ...] = (), calls: list | None = None):
    """Skip the real quantiser (tested above): INT8 files are FP32 copies, for testing the gate only;
    the flavours in `flip` get their logits negated (verdicts that differ from FP32's). `calls` collects
    (config, calibration set, probe) of each call."""
    import shutil

    outputs = {"global": names.GLOBAL_LOGITS, "parts": names.PART_LOGITS}

    def fake(out, calib, cfg, config, probe, log):
        if calls is not None:
            calls.append((config, calib, probe))
        for g in names.GRAPHS:
            for f in config.int8_flavours:
                src, dest = out / names.model_file(g), out / names.model_file(g, "int8", f)
                negated_logits(src, dest, outputs[g]) if f in flip else shutil.copyfile(src, dest)
        return {"files": {}, "reduce_range": {}, "flavours": {}, "trials": {}}

    monkeypatch.setattr(bundle_mod, "quantize_bundle", fake)


@pytest.fixture()
def even_ckpt(work, tmp_path, exported, monkeypatch):
    """The tiny model's checkpoint with thresholds 0.5/0.5 (no abstain band: every flipped P changes the
    verdict), and the graph export replaced by copies of `exported`'s files (tested above)."""
    import shutil

    root, model, _ = work
    ckpt = tmp_path / "even.pt"
    save_checkpoint(ckpt, model, list(names.CLASS_NAMES), thresholds=Thresholds(0.5, 0.5))

    def copy_graphs(model, out, opset):
        for g in names.GRAPHS:
            shutil.copyfile(exported[0] / names.model_file(g), Path(out) / names.model_file(g))
        return load_bundle(exported[0]).manifest.tensors

    monkeypatch.setattr(bundle_mod, "export_graphs", copy_graphs)
    return ckpt


def test_int8_gate_refuses_changed_verdicts_unless_forced(work, even_ckpt, tmp_path, monkeypatch):
    """A CPU flavour whose verdicts differ from FP32's on every val image fails the gate: no bundle, the
    failure's report names it; with --force the bundle ships with cpu `failed-forced`, trt `passed`."""
    root = work[0]
    _fast_int8(monkeypatch, flip=("cpu",))
    args = [str(even_ckpt), "--int8", "--calib", str(root / "data"), "--calib-n", "3"]
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a")])
    assert res.exit_code == 1 and "INT8 gate failed: int8 cpu: verdicts equal FP32's on 0.0% of" in res.output, \
        res.output
    assert "int8 trt" not in res.output.split("INT8 gate failed")[1]
    assert not (tmp_path / "a").exists(), "a failed export leaves no bundle folder"
    failed = tmp_path / "a.failed-report.json"
    assert str(failed) in res.output
    gate = json.loads(failed.read_text())["int8"]["gate"]
    assert gate["flavours"]["cpu"]["status"] == "failed" and gate["flavours"]["trt"]["status"] == "passed"
    assert gate["flavours"]["cpu"]["agreement"] == 0.0 and gate["flavours"]["trt"]["agreement"] == 1.0
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a"), "--force"])
    assert res.exit_code == 0 and "recorded failed-forced" in res.output, res.output
    man = load_bundle(tmp_path / "a").manifest
    assert man.calibration["n"] == 3
    assert man.int8_status("cpu") == "failed-forced" and man.int8_status("trt") == "passed"
    assert man.int8_gate["flavours"]["cpu"]["abs_dp"]["max"] > 0 and man.int8_gate["images"]["n"] > 0
    assert not failed.exists(), "a successful export removes the stale failure report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "even.pt"], "no staging folder left behind"


def test_int8_gate_options_and_passing_copies(work, even_ckpt, tmp_path, monkeypatch):
    """INT8 files equal to FP32 pass the default gate; --min-int8-agreement 0 and a --max-int8-drop of
    100 let even flipped verdicts pass; an agreement above 1 is a one-line error."""
    root = work[0]
    args = [str(even_ckpt), "--int8", "--calib", str(root / "data"), "--calib-n", "3"]
    _fast_int8(monkeypatch)
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    man = load_bundle(tmp_path / "a").manifest
    assert man.int8_status("cpu") == man.int8_status("trt") == "passed"
    assert man.int8_gate["criteria"] == {"min_agreement": 0.99, "max_drop_points": 0.5}
    _fast_int8(monkeypatch, flip=("cpu", "trt"))
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b"), "--min-int8-agreement", "0",
                                           "--max-int8-drop", "100"])
    assert res.exit_code == 0, res.output
    assert load_bundle(tmp_path / "b").manifest.int8_status("cpu") == "passed"
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c"), "--min-int8-agreement", "1.5"])
    assert res.exit_code == 1 and res.output.strip().splitlines()[-1] == \
        "Error: --min-int8-agreement must be in [0, 1], got 1.5"


def test_search_is_on_by_default_and_calibrates_on_the_whole_train_split(work, even_ckpt, tmp_path, monkeypatch):
    """Without --calib-n every train image calibrates (fewer than 512 here); with a val split the search
    gets a gate probe on it, --no-fallback gives none (the configured method quantises everything)."""
    root = work[0]
    calls: list = []
    _fast_int8(monkeypatch, calls=calls)
    args = [str(even_ckpt), "--int8", "--calib", str(root / "data")]
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b"), "--no-fallback", "--reduce-range", "off"])
    assert res.exit_code == 0, res.output
    (on, calib, probe), (off, _, no_probe) = calls
    assert on.fallback and on.reduce_range == "auto" and not off.fallback and off.reduce_range == "off"
    assert len(calib.images) == len(list_images(root / "data" / "train")) == calib.available
    assert on.calib_n == 512 and probe is not None and no_probe is None
    assert len(probe.frames) == len(list_images(root / "data" / "val"))
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c"), "--reduce-range", "maybe"])
    assert res.exit_code == 2 and "'maybe' is not one of 'auto', 'on', 'off'" in res.output


def test_int8_without_val_is_unverified(work, even_ckpt, tmp_path, monkeypatch):
    """Calibration from a folder without a val split: one line says so and INT8 is `unverified`."""
    import shutil

    root = work[0]
    calib = tmp_path / "calib"
    shutil.copytree(root / "data" / "train", calib)
    _fast_int8(monkeypatch)
    res = CliRunner().invoke(main, [str(even_ckpt), "--int8", "--calib", str(calib), "--calib-n", "3",
                                    "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert sum("no labelled val split" in line for line in res.output.splitlines()) == 1, res.output
    man = load_bundle(tmp_path / "a").manifest
    assert man.int8_status("cpu") == man.int8_status("trt") == "unverified" and man.int8_gate["images"] is None


def test_failed_export_leaves_the_previous_bundle_loadable(work, tmp_path, monkeypatch):
    """The export is a transaction: a gate that fails after the graphs were written, a parity failure,
    and an interrupt each leave the previous bundle (signed here) byte for byte as it was."""
    root, model, _ = work
    from edge_runtime.bundle.signing import generate_keypair

    ckpt = tmp_path / "even.pt"
    save_checkpoint(ckpt, model, list(names.CLASS_NAMES), thresholds=Thresholds(0.5, 0.5))
    out = tmp_path / "work" / "bundle"
    key = tmp_path / "team.key"
    generate_keypair(key, tmp_path / "team.pub")
    runner = CliRunner()
    res = runner.invoke(main, [str(ckpt), "--out", str(out), "--sign", str(key)])
    assert res.exit_code == 0, res.output
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert Path(names.SIGNATURE_FILE) in before

    _fast_int8(monkeypatch, flip=("cpu", "trt"))
    args = [str(ckpt), "--out", str(out), "--sign", str(key)]
    res = runner.invoke(main, args + ["--int8", "--calib", str(root / "data"), "--calib-n", "3"])
    assert res.exit_code == 1 and "INT8 gate failed" in res.output, res.output
    def broken_parity(model, pipe, frames, positive):
        return {"passed": False, "failures": ["frame 0: 0.9 vs 0.1"], "max_abs_prob_diff": 0.8}

    monkeypatch.setattr(bundle_mod, "check_runtime_parity", broken_parity)
    res = runner.invoke(main, args)
    assert res.exit_code == 1 and "runtime-path parity failed" in res.output, res.output

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod, "check_runtime_parity", interrupted)
    assert runner.invoke(main, args).exit_code == 130

    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before, "the previous bundle changed"
    assert load_bundle(out).manifest.files, "the previous bundle still loads"
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle", "bundle.failed-report.json"]


def test_export_refuses_a_folder_that_is_not_a_bundle(work, tmp_path):
    """The bundle replaces --out as a whole, so a folder with other files (here a training run's, which
    has a report.json too) is refused, untouched."""
    _, _, ckpt = work
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "report.json", "metrics.csv"):
        (run / name).write_text("mine")
    res = CliRunner().invoke(main, [str(ckpt), "--out", str(run)])
    assert res.exit_code == 1 and "not part of a bundle (best.pt, metrics.csv)" in res.output, res.output
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "metrics.csv", "report.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no staging folder left behind"


def _one_line_error(res, code=1) -> str:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and isinstance(res.exception, SystemExit), res.output
    return lines[0]


def test_bad_input_gives_one_line(work, tmp_path):
    root, _, ckpt = work
    runner = CliRunner()
    not_ckpt = tmp_path / "notes.pt"
    not_ckpt.write_text("not a checkpoint")
    assert "not a readable checkpoint" in _one_line_error(runner.invoke(main, [str(not_ckpt), "--out", str(tmp_path / "o")]))
    assert "not found" in _one_line_error(runner.invoke(main, [str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot write" in _one_line_error(runner.invoke(main, [str(ckpt), "--out", str(blocker / "sub")]))
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _one_line_error(runner.invoke(main, [str(ckpt), "--out", str(tmp_path / "o"), "--int8", "--calib", str(empty)]))
    assert "no calibration images" in line
    val = root / "data" / "val"
    line = _one_line_error(runner.invoke(main, [str(ckpt), "--out", str(tmp_path / "o"), "--int8", "--calib", str(val),
                                                "--val", str(val)]))
    assert "overlap the evaluation split" in line and "refusing" in line
    assert "--calib" in runner.invoke(main, [str(ckpt), "--out", str(tmp_path / "o"), "--int8"]).output
    assert not (tmp_path / "o" / names.MANIFEST_FILE).exists()


def test_near_tie_of_peak_picking_is_not_a_frozen_graph():
    from export.parity import is_tie

    t = np.array([[[0.25, 0.25, 0.5, 0.5], [0.0, 0.0, 0.25, 0.25]]], np.float32)
    s = np.array([[0.5, 0.4]], np.float32)
    one_cell = t + np.array([1 / 16, 0, 1 / 16, 0], np.float32) * np.array([[1], [0]], np.float32)
    assert is_tie(t, one_cell, s, s + 1e-7, heat_side=16)  # neighbour cell, same window mean
    assert not is_tie(t, one_cell, s, s + np.array([[1e-3, 0]], np.float32), heat_side=16)  # not a tie
    far = t.copy()
    far[0, 0] = [0.5, 0.5, 0.75, 0.75]
    assert not is_tie(t, far, s, s, heat_side=16)  # a box elsewhere: frozen or wrong, never a tie


def test_int8_flavours_choose_the_files(work, exported, tmp_path, monkeypatch):
    root, _, ckpt = work
    _fast_int8(monkeypatch)
    import shutil

    def copy_graphs(model, out, opset):
        for g in names.GRAPHS:
            shutil.copyfile(exported[0] / names.model_file(g), Path(out) / names.model_file(g))
        return load_bundle(exported[0]).manifest.tensors

    monkeypatch.setattr(bundle_mod, "export_graphs", copy_graphs)
    args = [str(ckpt), "--int8", "--int8-flavours", "cpu", "--calib", str(root / "data"), "--calib-n", "3",
            "--out", str(tmp_path / "cpu")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    manifest = load_bundle(tmp_path / "cpu").manifest
    assert manifest.file_for("global", "int8", "cpu") and manifest.file_for("parts", "int8", "cpu")
    assert manifest.file_for("global", "int8", "trt") is None
    assert not (tmp_path / "cpu" / names.model_file("global", "int8", "trt")).exists()


def test_fitted_thresholds_reach_the_manifest_and_the_scanner(work, tmp_path):
    """Thresholds a checkpoint carries (fitted by mgfen-train) travel into manifest.json, with their fit
    record in the provenance, and decide the scanner's calls."""
    from edge_runtime.model_runner import ModelRunner
    from edge_runtime.preprocess import read_image
    from edge_runtime.roi import Thresholds

    root, model, _ = work
    paths = list_images(root / "data" / "val")
    p = np.array([torch_probability(model, f, 1) for f in frames_from(paths, PRE)])
    fitted = Thresholds(genuine_at=float(np.median(p)), counterfeit_at=0.9)  # not the defaults 0.3 / 0.7
    ckpt = tmp_path / "fitted.pt"
    save_checkpoint(ckpt, model, list(names.CLASS_NAMES), thresholds=fitted, data_hash="f" * 16)
    raw = torch.load(ckpt, weights_only=False)
    raw["threshold_fit"] = {"target_recall": 0.99, "genuine_method": "fitted"}
    torch.save(raw, ckpt)
    out = tmp_path / "bundle"
    res = CliRunner().invoke(main, [str(ckpt), "--out", str(out)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / names.MANIFEST_FILE).read_text())
    assert manifest["thresholds"] == {"genuine_at": fitted.genuine_at, "counterfeit_at": 0.9}
    assert manifest["provenance"]["threshold_fit"] == {"target_recall": 0.99, "genuine_method": "fitted"}
    with ModelRunner.open(load_bundle(out), "ort") as runner:
        assert runner.thresholds == fitted
        results = [runner.run_frame(read_image(path)) for path in paths]
    assert [r.decision for r in results] == [fitted.decide(r.probability) for r in results]
    # the median splits the frames into genuine and uncertain calls; the defaults would call all uncertain
    assert {r.decision for r in results} == {"genuine", "uncertain"}
    assert {Thresholds().decide(r.probability) for r in results} == {"uncertain"}
