"""Helpers shared by the benchmark scripts (run them as `python benchmarks/<script>.py`; this folder is
then on sys.path, so `import _common` works).

- synthetic_data / sample_frames: the cached synthetic dataset (train.data.synth) and real BGR frames from it;
- run_rounds / summarise: variants timed round by round in alternating order, min / median / FPS;
- (the MAC counter lives in the library: edge_runtime.cost.graph_cost.count_macs / graph_cost);
- conv_graph / matmul_graph: single-op FP32 or QDQ U8S8 graphs for measuring the MAC/s a CPU achieves;
- cpu_flags: the CPU model and vector extensions, printed with every run;
- write_results: a benchmark's JSON and its markdown beside it.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from calibration.cpu_features import read_cpu_flags
from edge_runtime.inference.device_info import cpu_model
from edge_runtime.preprocess import evenly_spaced, list_images, read_image

# ------------------------------------------------------------------------------------------------ data


def synthetic_data(out: Path, n: int, size: int = 1024, seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """The synthetic dataset in `out` (train.data.synth layout), generated once and reused afterwards."""
    from train.data.synth import generate_dataset
    from train.data.synth_config import SynthConfig

    out = Path(out)
    if not (out / "manifest.csv").is_file():
        t0 = time.perf_counter()
        generate_dataset(out, SynthConfig(n=n, size=size, seed=seed), workers=2, overwrite=True)
        log(f"synthetic data: {n} frames of {size} px in {time.perf_counter() - t0:.0f} s -> {out}")
    return out


def sample_frames(data: Path, count: int) -> list[np.ndarray]:
    """Up to `count` HxWx3 uint8 BGR frames of the dataset's test split (sorted, evenly spread)."""
    paths = list_images(Path(data) / "test") or list_images(data)
    if not paths:
        raise FileNotFoundError(f"{data}: no images")
    return [read_image(p) for p in evenly_spaced(paths, count)]


def cpu_flags() -> str:
    """The CPU model and the vector extensions that decide int8/fp32 speed (printed with every run)."""
    flags = read_cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return f"{cpu_model()}; {os.cpu_count()} cores; " + " ".join(f for f in wanted if f in flags)


# ------------------------------------------------------------------------------------------------ timing


def write_results(out: Path, header: str, results: dict, markdown: Callable[[str, dict], str]) -> None:
    """{"header", "results"} as JSON to `out` and markdown(header, results) beside it (.md)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"header": header, "results": results}, indent=1))
    out.with_suffix(".md").write_text(markdown(header, results) + "\n")


def run_rounds(variants: dict[str, Callable[[int], dict]], rounds: int, warmup: int,
               progress: Callable[[int], None] | None = None) -> dict[str, list[dict]]:
    """Call every variant once per round (`fn(round_index) -> sample dict`), the order reversed on odd
    rounds, so slow drifts of machine load hit all variants alike. The first `warmup` rounds are
    dropped. Returns {name: [sample per timed round]}."""
    samples: dict[str, list[dict]] = {k: [] for k in variants}
    order = list(variants)
    for r in range(warmup + rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            s = variants[name](r)
            if r >= warmup:
                samples[name].append(s)
        if progress is not None:
            progress(r)
    return samples


def summarise(values_ms: Sequence[float]) -> dict:
    """min / median / mean (ms) and FPS at the median of a list of per-frame times."""
    med = statistics.median(values_ms)
    return {"min_ms": round(min(values_ms), 3), "median_ms": round(med, 3),
            "mean_ms": round(statistics.fmean(values_ms), 3), "fps": round(1000.0 / med, 2), "n": len(values_ms)}


# ---------------------------------------------------------------------------------- MAC/s micro-graphs

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; onnxruntime accepts it whatever the installed onnx's latest IR is


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "micro", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _qdq_act(name: str, scale: float, nodes: list, inits: list) -> str:
    """Append QuantizeLinear -> DequantizeLinear (uint8, zero point 128) on tensor `name`; return the
    dequantised tensor's name."""
    inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
              numpy_helper.from_array(np.array(128, np.uint8), f"{name}_z")]
    nodes += [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
              helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"])]
    return f"{name}_dq"


def _qdq_weight(w: np.ndarray, axis: int | None, nodes: list, inits: list) -> str:
    """int8 symmetric weights (per channel along `axis`, or per tensor) + DequantizeLinear; returns the
    dequantised tensor's name."""
    if axis is None:
        scale = np.array(np.abs(w).max() / 127.0, np.float32)
        zero = np.array(0, np.int8)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        attrs = {}
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        scale = (np.abs(w).max(axis=red) / 127.0).astype(np.float32)
        zero = np.zeros(scale.shape, np.int8)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        attrs = {"axis": axis}
    inits += [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale, "w_s"),
              numpy_helper.from_array(zero, "w_z")]
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"], **attrs))
    return "w_dq"


def conv_graph(cin: int, cout: int, kernel: int, size: int, group: int = 1, int8: bool = False,
               seed: int = 0) -> tuple[onnx.ModelProto, int]:
    """One Conv (stride 1, same padding, no bias) on x [1,cin,size,size] float32 -> y [1,cout,size,size].
    int8: QDQ U8S8 as the bundle's cpu flavour (uint8 activations in and out, int8 per-channel weights),
    which onnxruntime fuses into QLinearConv. Returns (model, MACs)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin // group, kernel, kernel)).astype(np.float32) * 0.05
    nodes: list = []
    inits: list = []
    x_in = _qdq_act("x", 0.02, nodes, inits) if int8 else "x"
    if int8:
        w_in = _qdq_weight(w, 0, nodes, inits)
    else:
        inits.append(numpy_helper.from_array(w, "w"))
        w_in = "w"
    pad = kernel // 2
    nodes.append(helper.make_node("Conv", [x_in, w_in], ["y"], kernel_shape=[kernel, kernel],
                                  pads=[pad] * 4, group=group))
    out = _qdq_act("y", 0.05, nodes, inits) if int8 else "y"
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, size, size])],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, cout, size, size])], inits)
    return model, size * size * cout * (cin // group) * kernel * kernel


def matmul_graph(m: int, k: int, n: int, int8: bool = False, seed: int = 0) -> tuple[onnx.ModelProto, int]:
    """a [m,k] float32 @ constant b [k,n] -> [m,n]; int8: QDQ U8S8 (per-tensor weights). Returns
    (model, MACs)."""
    rng = np.random.default_rng(seed)
    b = rng.standard_normal((k, n)).astype(np.float32) * 0.05
    nodes: list = []
    inits: list = []
    a_in = _qdq_act("a", 0.02, nodes, inits) if int8 else "a"
    if int8:
        b_in = _qdq_weight(b, None, nodes, inits)
    else:
        inits.append(numpy_helper.from_array(b, "w"))
        b_in = "w"
    nodes.append(helper.make_node("MatMul", [a_in, b_in], ["y"]))
    out = _qdq_act("y", 0.05, nodes, inits) if int8 else "y"
    model = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, [m, n])], inits)
    return model, m * k * n


def session_from_model(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """A CPU session on an in-memory model, intra_op_num_threads = threads, all optimisations on."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def optimized_op_types(model: onnx.ModelProto) -> list[str]:
    """Op types of the graph onnxruntime actually runs (basic + extended fusions, e.g. QDQ -> QLinearConv),
    in node order. Layout transforms are left off so the optimised file can be saved."""
    with tempfile.TemporaryDirectory(prefix="mgfen-bench-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(str(Path(tmp) / "opt.onnx")).graph.node]


@dataclass(frozen=True)
class MicroShape:
    """One micro-benchmark graph: kind "conv" (a=cin, b=cout, c=kernel, size, group) or "matmul"
    (a=m, b=k, c=n)."""

    name: str
    kind: str
    a: int
    b: int
    c: int
    size: int = 0
    group: int = 1

    def build(self, int8: bool) -> tuple[onnx.ModelProto, int]:
        if self.kind == "conv":
            return conv_graph(self.a, self.b, self.c, self.size, self.group, int8)
        return matmul_graph(self.a, self.b, self.c, int8)
