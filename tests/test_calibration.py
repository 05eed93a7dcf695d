"""Calibration: deterministic stratified selection, overlap refusal, readers on the shared preprocessing,
QDQ flavours and the TensorRT Q/DQ lint (which must fail on graphs that break its rules)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration import CalibrationError
from calibration.accuracy import OrtPipeline, PipelineParams, compare_precisions, make_session
from calibration.lint import lint_trt
from calibration.quantize import quantize_graph
from calibration.reader import GlobalReader, PartsReader
from calibration.select import select_calibration
from edge_runtime import names
from edge_runtime.preprocess import PreprocessConfig, global_input, load_frame
from edge_runtime.roi import crop_rois
from fake_bundle import global_graph, make_image, parts_graph

CFG = PreprocessConfig(frame_size=128, global_size=64, crop_size=32, ace=False, brightness_target=None)


def write_dataset(root: Path, per_class: dict[str, int], backgrounds=("wood", "weave")) -> Path:
    """root/{train,val}/{genuine,counterfeit}/*.png with a manifest.csv naming a background per image."""
    rows = []
    for split, count in per_class.items():
        for ci, cls in enumerate(names.CLASS_NAMES):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rel = f"{split}/{cls}/img{i:02d}.png"
                colour = ("red", "blue")[ci]
                cv2.imwrite(str(root / rel), make_image(colour, 96, 80, seed=hash((split, ci, i)) % 10_000))
                rows.append([rel, split, cls, f"g{i}", backgrounds[i % len(backgrounds)]])
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "split", "label", "group", "background"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ds"), {"train": 8, "val": 3})


# ------------------------------------------------------------------------------------------- selection


def test_selection_is_deterministic_and_stratified(dataset):
    a = select_calibration(dataset, 8)
    b = select_calibration(dataset, 8)
    assert a.paths == b.paths and a.hashes == b.hashes
    assert a.root == dataset / "train", "a dataset root calibrates on train/ only"
    assert {p.parent.parent.name for p in a.paths} == {"train"}
    strata = a.to_manifest("entropy")["strata"]
    # 2 classes x 2 backgrounds, 8 picks: 2 from each stratum
    assert strata == {"counterfeit/weave": 2, "counterfeit/wood": 2, "genuine/weave": 2, "genuine/wood": 2}
    assert a.paths == sorted(a.paths)
    entry = a.to_manifest("minmax")
    assert entry["n"] == 8 and entry["method"] == "minmax" and len(entry["images"]) == 8
    assert all(len(im["sha256"]) == 64 for im in entry["images"])
    assert sorted(entry["kept_off"]) == ["val"]
    # more than available: all of them, still deterministic
    assert len(select_calibration(dataset, 100).images) == 16


def test_odd_n_spreads_over_strata(dataset):
    picks = select_calibration(dataset, 5).to_manifest("entropy")["strata"]
    assert sum(picks.values()) == 5 and max(picks.values()) - min(picks.values()) <= 1 and len(picks) == 4


def test_empty_folder_and_bad_n_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(CalibrationError, match="no calibration images"):
        select_calibration(tmp_path / "empty", 8)
    with pytest.raises(CalibrationError, match="not found"):
        select_calibration(tmp_path / "missing", 8)
    with pytest.raises(CalibrationError, match=">= 1"):
        select_calibration(tmp_path / "empty", 0)


def test_overlap_with_evaluation_split_is_refused(tmp_path, dataset):
    calib = tmp_path / "calib"
    shutil.copytree(dataset / "train", calib)
    val = tmp_path / "val"
    shutil.copytree(dataset / "val", val)
    select_calibration(calib, 4, [val])  # disjoint: fine
    # a renamed copy of a calibration image inside the validation folder: same content hash
    first = select_calibration(calib, 4).paths[0]
    shutil.copyfile(first, val / "genuine" / "renamed_copy.png")
    with pytest.raises(CalibrationError, match="overlap the evaluation split"):
        select_calibration(calib, 4, [val])
    # the dataset root's own val/ is checked too
    root = tmp_path / "root"
    shutil.copytree(dataset, root)
    shutil.copyfile(root / "val" / "genuine" / "img00.png", root / "train" / "genuine" / "img99.png")
    with pytest.raises(CalibrationError, match="overlap"):
        select_calibration(root, 100)


def test_reencoded_resized_copy_of_a_val_image_is_refused(tmp_path, dataset):
    """A val image resized to 3/4 and saved as JPEG has other bytes (the sha256 check alone let it in)
    but the same content: the perceptual hash catches it, and names both files."""
    import hashlib

    calib = tmp_path / "calib"
    shutil.copytree(dataset / "train", calib)
    val = dataset / "val"
    original = val / "counterfeit" / "img01.png"
    image = cv2.imread(str(original))
    small = cv2.resize(image, (image.shape[1] * 3 // 4, image.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    copy = calib / "counterfeit" / "phone_copy.jpg"
    cv2.imwrite(str(copy), small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert hashlib.sha256(copy.read_bytes()).hexdigest() != hashlib.sha256(original.read_bytes()).hexdigest()
    with pytest.raises(CalibrationError, match=r"1 of 17 .*phone_copy.jpg: \d+ of 256 hash bits from .*img01.png"):
        select_calibration(calib, 100, [val])
    copy.unlink()
    assert len(select_calibration(calib, 100, [val]).images) == 16  # the other images are far apart


# ----------------------------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def fake_graphs(tmp_path_factory):
    root = tmp_path_factory.mktemp("graphs")
    onnx.save(global_graph(CFG, 4), root / "global.onnx")
    onnx.save(parts_graph(CFG, 4), root / "parts.onnx")
    return root


def test_readers_feed_the_shared_preprocessing(dataset, fake_graphs):
    paths = select_calibration(dataset, 3).paths
    reader = GlobalReader(paths, CFG)
    feeds = list(reader)
    assert len(feeds) == 3
    np.testing.assert_array_equal(feeds[0][names.GLOBAL_INPUT], global_input(load_frame(paths[0], CFG), CFG))
    reader.rewind()
    assert reader.get_next() is not None
    session = make_session(fake_graphs / "global.onnx")
    parts = list(PartsReader(paths, CFG, session))
    frame = load_frame(paths[1], CFG)
    (boxes,) = session.run([names.BOXES], {names.GLOBAL_INPUT: global_input(frame, CFG)})
    np.testing.assert_array_equal(parts[1][names.PARTS_INPUT], crop_rois(frame, boxes[0], CFG.crop_size))
    assert parts[1][names.PARTS_INPUT].shape == (4, 3, 32, 32)


def test_accuracy_report_against_itself(dataset, fake_graphs, tmp_path):
    params = PipelineParams(CFG, 1.0, True, 1)
    pipe = OrtPipeline(fake_graphs / "global.onnx", fake_graphs / "parts.onnx", params)
    rep = compare_precisions({"fp32": pipe, "copy": pipe}, "fp32", dataset / "val", CFG)
    assert rep["n"] == 6 and rep["copy"]["agreement"] == 1.0 and rep["copy"]["delta_points"] == 0.0
    assert rep["fp32"]["accuracy"] == 1.0  # the fake model reads the colour cast: red genuine, blue fake
    (tmp_path / "misc").mkdir()
    cv2.imwrite(str(tmp_path / "misc" / "a.png"), make_image("red", 64, 64))
    with pytest.raises(CalibrationError, match="no labelled images"):
        compare_precisions({"fp32": pipe}, "fp32", tmp_path, CFG)


# ---------------------------------------------------------------------------------------- QDQ and lint


def conv_net(opset: int = 17) -> onnx.ModelProto:
    """image [1,3,16,16] -> Conv(8) -> Relu -> Conv(8) -> Add (residual) -> GAP -> Gemm -> logits [1,2]
    -> Softmax probs. Small but with every construct the rules speak about."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b2"),
             numpy_helper.from_array(rng.normal(0, 0.3, (2, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(2, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Add", ["r1", "c2"], ["s"], name="add"),
             helper.make_node("GlobalAveragePool", ["s"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], [names.GLOBAL_LOGITS], transB=1, name="fc"),
             helper.make_node("Softmax", [names.GLOBAL_LOGITS], ["probs"], axis=-1, name="softmax")]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("image", f32, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info(names.GLOBAL_LOGITS, f32, [1, 2]),
                               helper.make_tensor_value_info("probs", f32, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


class ImageReader:
    """Real image files resized to 16 x 16 through the shared preprocessing."""

    def __init__(self, paths):
        self.cfg = PreprocessConfig(frame_size=32, global_size=16, crop_size=16, ace=False, brightness_target=None)
        self.paths, self.i = list(paths), 0

    def get_next(self):
        if self.i >= len(self.paths):
            return None
        self.i += 1
        return {"image": global_input(load_frame(self.paths[self.i - 1], self.cfg), self.cfg)}

    def rewind(self):
        self.i = 0


@pytest.fixture(scope="module")
def quantised(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("q")
    onnx.save(conv_net(), root / "net.onnx")
    paths = select_calibration(dataset, 6).paths
    out = {}
    for flavour in ("trt", "cpu"):
        res = quantize_graph(root / "net.onnx", root / f"net.{flavour}.onnx", ImageReader(paths), flavour, "minmax")
        out[flavour] = (res, onnx.load(str(root / f"net.{flavour}.onnx")))
    return root, out


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_trt_flavour_follows_the_rules(quantised):
    root, out = quantised
    res, model = out["trt"]
    assert res.qdq_nodes > 0 and res.flavour == "trt"
    assert lint_trt(model) == []
    inits = _inits(model)
    zps = [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    conv_w_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in
                 {c.input[1] for c in model.graph.node if c.op_type == "Conv"}]
    assert conv_w_dq and all(inits[n.input[1]].size == 8 for n in conv_w_dq), "per-channel weights"
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert producers.get(node.input[2]) not in ("DequantizeLinear", "QuantizeLinear"), "bias stays FP32"
        if node.op_type == "Softmax":
            assert producers.get(node.input[0]) != "DequantizeLinear"
    # the stem (first conv) stays FP32 in the TensorRT flavour only: its input keeps every grey level
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    assert producers.get(convs["conv1"].input[0]) is None and producers.get(convs["conv1"].input[1]) is None
    assert producers.get(convs["conv2"].input[0]) == "DequantizeLinear"
    cpu = out["cpu"][1]
    cpu_producers = {o: n.op_type for n in cpu.graph.node for o in n.output}
    cpu_conv1 = next(n for n in cpu.graph.node if n.op_type == "Conv" and n.name.startswith("conv1"))
    assert cpu_producers.get(cpu_conv1.input[0]) == "DequantizeLinear"


def test_cpu_flavour_is_u8s8_and_fails_the_trt_lint(quantised, dataset):
    root, out = quantised
    _, model = out["cpu"]
    inits = _inits(model)
    act_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert act_q and all(inits[n.input[2]].dtype == np.uint8 for n in act_q)
    problems = lint_trt(model)
    assert any(p.rule == "signed" for p in problems)
    # both flavours run in onnxruntime and stay close to FP32 on real images
    feeds = list(iter(ImageReader(select_calibration(dataset, 4).paths).get_next, None))
    ref = make_session(root / "net.onnx")
    for flavour in ("trt", "cpu"):
        sess = make_session(root / f"net.{flavour}.onnx")
        for feed in feeds:
            a = ref.run(["probs"], feed)[0]
            b = sess.run(["probs"], feed)[0]
            assert np.abs(a - b).max() < 0.1


def _qdq_conv(zp_dtype=np.int8, zp_value=0, w_axis=0, w_scales=8, act_scales=1, bias_q=False,
              softmax_q=False, opset=17, act_zp=True) -> onnx.ModelProto:
    """A hand-written QDQ Conv (+ Softmax) graph with one knob per rule."""
    rng = np.random.default_rng(1)
    w = rng.integers(-100, 100, (8, 3, 3, 3)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w_q"),
             numpy_helper.from_array(np.full(w_scales, 0.01, np.float32).reshape(-1) if w_scales > 1
                                     else np.array(0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(w_scales, np.int8) if w_scales > 1 else np.array(0, np.int8), "w_zp"),
             numpy_helper.from_array(np.full(act_scales, 0.02, np.float32) if act_scales > 1
                                     else np.array(0.02, np.float32), "a_scale"),
             numpy_helper.from_array(np.full(act_scales, zp_value, zp_dtype) if act_scales > 1
                                     else np.array(zp_value, zp_dtype), "a_zp"),
             numpy_helper.from_array(np.zeros(8, np.float32), "bias")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"] if act_zp else ["x", "a_scale"], ["x_q"],
                              name="q_x", **({"axis": 1} if act_scales > 1 else {})),
             helper.make_node("DequantizeLinear", ["x_q", "a_scale", "a_zp"] if act_zp else ["x_q", "a_scale"],
                              ["x_dq"], name="dq_x", **({"axis": 1} if act_scales > 1 else {})),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w_dq"], name="dq_w",
                              **({"axis": w_axis} if w_scales > 1 else {}))]
    bias_name = "bias"
    if bias_q:
        inits += [numpy_helper.from_array(np.zeros(8, np.int32), "bias_q"),
                  numpy_helper.from_array(np.full(8, 0.0002, np.float32), "bias_scale")]
        nodes.append(helper.make_node("DequantizeLinear", ["bias_q", "bias_scale"], ["bias_dq"], name="dq_b", axis=0))
        bias_name = "bias_dq"
    nodes.append(helper.make_node("Conv", ["x_dq", "w_dq", bias_name], ["y"], pads=[1, 1, 1, 1], name="conv"))
    soft_in = "y"
    if softmax_q:
        nodes += [helper.make_node("QuantizeLinear", ["y", "a_scale", "a_zp"], ["y_q"], name="q_y"),
                  helper.make_node("DequantizeLinear", ["y_q", "a_scale", "a_zp"], ["y_dq"], name="dq_y")]
        soft_in = "y_dq"
    nodes.append(helper.make_node("Softmax", [soft_in], ["p"], axis=1, name="softmax"))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", f32, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("p", f32, [1, 8, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("knobs, rule", [
    ({}, None),
    ({"zp_dtype": np.uint8, "zp_value": 128}, "signed"),
    ({"zp_value": 3}, "zero-point"),
    ({"act_zp": False}, "signed"),
    ({"w_axis": 1, "w_scales": 3}, "channel-axis"),
    ({"act_scales": 3}, "per-tensor"),
    ({"bias_q": True}, "bias"),
    ({"softmax_q": True}, "softmax"),
    ({"opset": 12}, "opset"),
])
def test_lint_flags_each_broken_rule(knobs, rule):
    problems = lint_trt(_qdq_conv(**knobs))
    if rule is None:
        assert problems == []
    else:
        assert rule in {p.rule for p in problems}, [str(p) for p in problems]
        assert all(str(p) for p in problems)
