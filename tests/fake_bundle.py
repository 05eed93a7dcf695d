"""A tiny fake bundle for tests and benchmarks: two ONNX graphs built with onnx.helper (no torch, no
training) that follow the bundle contract exactly (tensor names from edge_runtime.names, fixed shapes),
plus a real manifest.json written by edge_runtime.bundle.manifest.write_manifest.

What the fake model "sees": the colour of the frame. Logits are `gain * (mean B - mean R, ...)`, so a
reddish frame is genuine and a bluish frame counterfeit, with a probability that tends to 0 or 1 as the
colour difference grows. The heatmap is an average pool of the channel mean, the boxes are constants
snapped to whole pixels of the F x F frame (K boxes of side R along the diagonal), and the box scores
are the heatmap mean repeated K times.

    make_fake_bundle(tmp_path / "bundle")                    # fp32 only
    make_fake_bundle(tmp_path / "bundle", int8=True)         # + int8 cpu/trt files (fp32 copies
                                                             #   under the int8 names: for selection
                                                             #   logic only, not real quantisation),
                                                             #   their INT8 gate recorded `passed`
    make_fake_bundle(..., int8=True, int8_status="failed-forced")   # or another status; None: no record
    make_image("blue", 160, 120)                             # HxWx3 uint8 BGR test frame with texture
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from calibration.verdict_gate import GateCriteria
from edge_runtime import names
from edge_runtime.bundle.manifest import FileEntry, Manifest, write_manifest
from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.roi import Thresholds

OPSET = 17
GAIN = 12.0


def _colour_head(prefix: str, x: str, gain: float) -> tuple[list, list, str]:
    """Nodes mapping a [N,3,H,W] tensor to [N,2] logits: [gain*(R-B), gain*(B-R)] of channel means."""
    weight = np.array([[gain, -gain], [0.0, 0.0], [-gain, gain]], dtype=np.float32)  # RGB rows
    inits = [numpy_helper.from_array(weight, f"{prefix}_w"),
             numpy_helper.from_array(np.zeros(2, np.float32), f"{prefix}_b")]
    nodes = [
        helper.make_node("ReduceMean", [x], [f"{prefix}_mean"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", [f"{prefix}_mean", f"{prefix}_w"], [f"{prefix}_mm"]),
        helper.make_node("Add", [f"{prefix}_mm", f"{prefix}_b"], [f"{prefix}_out"]),
    ]
    return nodes, inits, f"{prefix}_out"


def fake_boxes(frame_size: int, crop_size: int, k: int) -> np.ndarray:
    """K normalised boxes of side crop_size pixels along the diagonal, snapped to whole frame pixels."""
    step = (frame_size - crop_size) // max(k - 1, 1)
    px = np.array([[i * step, i * step, i * step + crop_size, i * step + crop_size] for i in range(k)],
                  dtype=np.float32)
    return (px / frame_size)[None]


def global_graph(cfg: PreprocessConfig, k: int, heat: int = 8, gain: float = GAIN) -> onnx.ModelProto:
    """image [1,3,S,S] -> global_logits [1,2], heatmap [1,1,heat,heat], boxes [1,K,4], box_scores [1,K]."""
    s = cfg.global_size
    if s % heat:
        raise ValueError("global_size must be a multiple of the heatmap side")
    head, inits, logits = _colour_head("g", names.GLOBAL_INPUT, gain)
    inits += [numpy_helper.from_array(fake_boxes(cfg.frame_size, cfg.crop_size, k), "boxes_const"),
              numpy_helper.from_array(np.array([1, k], dtype=np.int64), "k_shape")]
    nodes = head + [
        helper.make_node("Identity", [logits], [names.GLOBAL_LOGITS]),
        helper.make_node("ReduceMean", [names.GLOBAL_INPUT], ["lum"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["lum"], [names.HEATMAP], kernel_shape=[s // heat] * 2,
                         strides=[s // heat] * 2),
        helper.make_node("Identity", ["boxes_const"], [names.BOXES]),
        helper.make_node("ReduceMean", [names.HEATMAP], ["heat_mean"], axes=[2, 3], keepdims=0),
        helper.make_node("Expand", ["heat_mean", "k_shape"], [names.BOX_SCORES]),
    ]
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "fake_global",
        [helper.make_tensor_value_info(names.GLOBAL_INPUT, f32, [1, 3, s, s])],
        [helper.make_tensor_value_info(names.GLOBAL_LOGITS, f32, [1, 2]),
         helper.make_tensor_value_info(names.HEATMAP, f32, [1, 1, heat, heat]),
         helper.make_tensor_value_info(names.BOXES, f32, [1, k, 4]),
         helper.make_tensor_value_info(names.BOX_SCORES, f32, [1, k])],
        inits)
    return _finish(graph)


def parts_graph(cfg: PreprocessConfig, k: int, gain: float = GAIN) -> onnx.ModelProto:
    """crops [K,3,R,R] -> part_logits [K,2] (same colour rule as the global head)."""
    r = cfg.crop_size
    nodes, inits, logits = _colour_head("p", names.PARTS_INPUT, gain)
    nodes.append(helper.make_node("Identity", [logits], [names.PART_LOGITS]))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "fake_parts",
        [helper.make_tensor_value_info(names.PARTS_INPUT, f32, [k, 3, r, r])],
        [helper.make_tensor_value_info(names.PART_LOGITS, f32, [k, 2])],
        inits)
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def make_fake_bundle(root: str | Path, *, frame_size: int = 128, global_size: int = 64,
                     crop_size: int = 32, k: int = 4, int8: bool = False, use_parts: bool = True,
                     global_weight: float = 1.0, thresholds: Thresholds = Thresholds(0.3, 0.7),
                     ace: bool = False, brightness_target: float | None = None,
                     int8_status: str | None = "passed") -> Path:
    """Write a complete fake bundle folder and return its path. ACE and brightness are off by default
    so the colour rule maps test frames to predictable probabilities. int8_status: the INT8 gate status
    recorded for both flavours (None: no record, as a manifest written before the gate existed)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = PreprocessConfig(frame_size=frame_size, global_size=global_size, crop_size=crop_size, ace=ace,
                           brightness_target=brightness_target)
    g, p = global_graph(cfg, k), parts_graph(cfg, k)
    onnx.save(g, root / names.model_file("global"))
    onnx.save(p, root / names.model_file("parts"))
    files = {names.model_file(graph): FileEntry(graph, "fp32", "") for graph in names.GRAPHS}
    if int8:
        for graph in names.GRAPHS:
            for flavour in ("cpu", "trt"):
                name = names.model_file(graph, "int8", flavour)
                shutil.copyfile(root / names.model_file(graph), root / name)
                files[name] = FileEntry(graph, "int8", "", flavour)
    tensors = {
        "global": {"inputs": {names.GLOBAL_INPUT: [1, 3, global_size, global_size]},
                   "outputs": {names.GLOBAL_LOGITS: [1, 2], names.HEATMAP: [1, 1, 8, 8],
                               names.BOXES: [1, k, 4], names.BOX_SCORES: [1, k]}},
        "parts": {"inputs": {names.PARTS_INPUT: [k, 3, crop_size, crop_size]},
                  "outputs": {names.PART_LOGITS: [k, 2]}},
    }
    manifest = Manifest(classes=names.CLASS_NAMES, preprocess=cfg, k=k, box_size=crop_size / frame_size,
                        global_weight=global_weight, use_parts=use_parts, thresholds=thresholds,
                        tensors=tensors, files=files, provenance={"fake": True},
                        int8_gate=fake_gate_record(int8_status) if int8 and int8_status else None)
    write_manifest(root, manifest)
    return root


def fake_gate_record(status: str) -> dict:
    """An int8_gate record (edge_runtime.bundle.int8_gate) giving both flavours `status`."""
    entry = {"status": status, "reason": f"fake bundle: {status}"}
    return {"criteria": GateCriteria().to_dict(), "images": None,
            "flavours": {"cpu": dict(entry), "trt": dict(entry)}}


def make_image(colour: str = "red", width: int = 160, height: int = 120, seed: int = 0,
               strength: int = 90, blur: float = 0.0) -> np.ndarray:
    """A textured HxWx3 uint8 BGR test frame: random mid-grey texture plus a colour cast.

    colour: "red" (genuine under the fake model), "blue" (counterfeit) or "grey" (uncertain).
    strength: size of the colour cast in grey levels. blur: Gaussian sigma (0 = sharp), to fail the
    focus gate.
    """
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 190, size=(height, width, 1), dtype=np.int16).repeat(3, axis=2)
    cast = {"red": (-1, 0, 1), "blue": (1, 0, -1), "grey": (0, 0, 0)}[colour]  # BGR signs
    img = np.clip(base + np.array(cast, np.int16) * (strength // 2), 0, 255).astype(np.uint8)
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    return img
