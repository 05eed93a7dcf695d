"""Static INT8 quantisation of one bundle graph to QDQ ONNX, in two flavours:

- "trt": what TensorRT's explicit quantisation accepts: QInt8 activations and weights, symmetric (zero
  points 0), per-channel weights, a dedicated Q/DQ pair per consumer, Q/DQ on weights, bias left FP32,
  no quantised Softmax. Checked afterwards by calibration.lint.
- "cpu": QDQ U8S8 (QUInt8 asymmetric activations, QInt8 symmetric per-channel weights), which onnxruntime's
  x86/ARM CPU kernels run several times faster than S8S8 (research.md).

The box-picking tail of the global graph (everything computed from the heatmap output: window means,
argmax, suppression, box coordinates) stays FP32 in both flavours: its comparisons and argmax on
quantised values would snap ties and move boxes, and it is a negligible share of the compute.

The TensorRT flavour also keeps its stem FP32 (the input normalisation and the first convolution; TensorRT
runs that island in FP32, or FP16 with --precision fp16 builds): a symmetric int8 input over [0, 1] has
only 128 levels, half the resolution of the 8-bit pixels, and the micro features this model exists for
live in a few grey levels. The CPU flavour's uint8 input keeps all 256 levels, so it needs no island.
Measured on the demo edge checkpoint (QDQ simulated in FP32, 64 val + 30 test images): without the island
the largest probability change against FP32 was 0.50 (one test image flipped), with it 0.12 (none).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
from onnxruntime.quantization import quantize_static
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
from onnxruntime.quantization.shape_inference import quant_pre_process

from calibration import CalibrationError
from edge_runtime import names

FLAVOURS = ("trt", "cpu")
METHODS = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
           "percentile": CalibrationMethod.Percentile}
NEVER_QUANTISED = ("Softmax",)  # TensorRT rejects a quantised Softmax; it is cheap in FP32 anyway
# Outputs of the classifier layers stay FP32: int8 logits would cost probability resolution for nothing.
LOGIT_OPS = ["Gemm", "MatMul"]
# Calibrator settings per method (quantize_static extra_options). onnxruntime's percentile calibrator
# defaults to symmetric histograms of |x| whose bins span the first batch's [min |x|, max |x|]: a tensor
# that is nearly constant there (a spread under ~2048 float32 steps, e.g. a pooled feature of similar
# images) cannot be cut into its 2048 bins and quantize_static raises "Too many bins for data range";
# later values below that min |x| would be dropped too. Signed histograms over [-max |x|, max |x|] (those
# entropy collects) have bins of max |x| / 1024, wider than a float32 step at any normal value, and grow
# by whole bins. Percentile then cuts (100 - p) / 2 % on each side instead of (100 - p) % of |x|; the
# range is symmetrised afterwards by the flavours with symmetric activations (trt), as for every method.
METHOD_OPTIONS = {"percentile": {"CalibTensorRangeSymmetric": False}}


# quantize_static's calibration cache (onnxruntime >= 1.23; older versions calibrate on every call)
HAS_RANGE_CACHE = "calibration_cache_path" in inspect.signature(quantize_static).parameters


@dataclass(frozen=True)
class QuantizeResult:
    """What one quantisation did: output path, flavour, method, seconds, the number of nodes kept FP32
    (the fixed ones: heatmap tail, TensorRT stem, plus `fallback`), Q/DQ node count, whether weights were
    7-bit (reduce_range) and the nodes kept FP32 by the fallback search (calibration.fallback)."""

    path: Path
    flavour: str
    method: str
    seconds: float
    kept_fp32: int
    qdq_nodes: int
    reduce_range: bool = False
    fallback: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"file": self.path.name, "flavour": self.flavour, "method": self.method,
                "seconds": round(self.seconds, 2), "kept_fp32_nodes": self.kept_fp32,
                "qdq_nodes": self.qdq_nodes, "reduce_range": self.reduce_range,
                "fallback_fp32_nodes": list(self.fallback)}


def descendants_of_output(model: onnx.ModelProto, output: str) -> list[str]:
    """Names of the node producing `output` and of every node downstream of it (empty if absent)."""
    nodes = list(model.graph.node)
    tainted: set[str] = {output}
    keep: list[str] = []
    # Graphs are topologically sorted (ONNX requires it), so one forward pass suffices.
    for node in nodes:
        if any(o == output for o in node.output) or any(i in tainted for i in node.input):
            keep.append(node.name)
            tainted.update(node.output)
    return keep


def stem_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes up to and including the first Conv (topological order): the input
    normalisation and the first convolution. Empty when the graph has no Conv."""
    keep: list[str] = []
    for node in model.graph.node:
        keep.append(node.name)
        if node.op_type == "Conv":
            return keep
    return []


def _ensure_node_names(model: onnx.ModelProto) -> None:
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)


def flavour_options(flavour: str, reduce_range: bool = False) -> dict:
    """quantize_static keyword arguments of a flavour (everything but the model, reader and method).
    reduce_range (7-bit weights, calibration.cpu_features) exists for the "cpu" flavour only: TensorRT
    accumulates in int32 and its explicit quantisation expects full-range int8 weights."""
    if reduce_range and flavour != "cpu":
        raise CalibrationError(f"reduce_range applies to the cpu INT8 flavour only, not {flavour!r}")
    ops = sorted((set(QDQRegistry) | set(QLinearOpsRegistry)) - set(NEVER_QUANTISED))
    if flavour == "trt":
        return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                    op_types_to_quantize=ops,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "AddQDQPairToWeight": True, "DedicatedQDQPair": True,
                                   "QuantizeBias": False, "OpTypesToExcludeOutputQuantization": LOGIT_OPS})
    if flavour == "cpu":
        return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                    op_types_to_quantize=ops,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                   "OpTypesToExcludeOutputQuantization": LOGIT_OPS})
    raise CalibrationError(f"unknown INT8 flavour {flavour!r}; expected one of {FLAVOURS}")


def prepare_for_quantization(fp32_path: str | Path, out_path: str | Path) -> Path:
    """onnxruntime's quant_pre_process (shape inference, constant folding) plus unique node names, once
    per graph; both flavours quantise the result. Raises CalibrationError on failure."""
    try:
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    except Exception as exc:  # the pre-processor raises many types; the FP32 file still works
        raise CalibrationError(f"{fp32_path}: ONNX pre-processing for quantisation failed: {exc}") from None
    model = onnx.load(str(out_path))
    _ensure_node_names(model)
    onnx.save(model, str(out_path))
    return Path(out_path)


def fixed_exclusions(graph: onnx.ModelProto, flavour: str) -> list[str]:
    """The nodes a flavour always keeps FP32: downstream of the heatmap output, and in "trt" the stem."""
    exclude = descendants_of_output(graph, names.HEATMAP)
    return exclude + stem_nodes(graph) if flavour == "trt" else exclude


def quantize_graph(fp32_path: str | Path, out_path: str | Path, reader: CalibrationDataReader,
                   flavour: str, method: str = "entropy", prepared: bool = False, reduce_range: bool = False,
                   fallback: tuple[str, ...] = (), ranges: str | Path | None = None) -> QuantizeResult:
    """Quantise the FP32 ONNX file at `fp32_path` into `out_path` with calibration feeds from `reader`.

    Unless `prepared` (the file already went through prepare_for_quantization), the model is first
    pre-processed. Nodes downstream of the heatmap output (global graph only) stay FP32, in the "trt"
    flavour also the stem (stem_nodes), and the node names in `fallback`. reduce_range: 7-bit weights
    (cpu flavour only). ranges: a file for the calibrated activation ranges of this graph and method:
    written by the first call, read by the next ones (no calibration run, `reader` unused).
    The ranges do not depend on the flavour or the nodes kept FP32 (every tensor of the quantisable
    op types is calibrated), so one file serves every trial of calibration.fallback. Without
    HAS_RANGE_CACHE (onnxruntime < 1.23) each call calibrates again (same result, slower).
    Raises CalibrationError for an unknown flavour/method or a quantiser failure.
    """
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
    options = flavour_options(flavour, reduce_range)
    options["extra_options"] = {**options["extra_options"], **METHOD_OPTIONS.get(method, {})}
    cache = {"calibration_cache_path": str(ranges)} if ranges is not None and HAS_RANGE_CACHE else {}
    out_path = Path(out_path)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mgfen-quant-") as tmp:
        pre = Path(fp32_path) if prepared else prepare_for_quantization(fp32_path, Path(tmp) / "pre.onnx")
        exclude = fixed_exclusions(onnx.load(str(pre), load_external_data=False), flavour)
        exclude += [n for n in fallback if n not in exclude]
        if hasattr(reader, "rewind"):
            reader.rewind()
        try:
            # the histogram calibrators print progress on stdout, which belongs to --json output
            with contextlib.redirect_stdout(sys.stderr):
                quantize_static(str(pre), str(out_path), reader, calibrate_method=METHODS[method],
                                nodes_to_exclude=exclude, **options, **cache)
        except Exception as exc:
            raise CalibrationError(f"{fp32_path}: {flavour} INT8 quantisation failed: {exc}") from None
    qdq = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in onnx.load(str(out_path)).graph.node)
    if qdq == 0:
        raise CalibrationError(f"{fp32_path}: quantisation produced no Q/DQ nodes")
    return QuantizeResult(out_path, flavour, method, time.perf_counter() - t0, len(exclude), qdq, reduce_range,
                          tuple(fallback))
