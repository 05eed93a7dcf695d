"""Check a QDQ ONNX model against TensorRT's explicit-quantisation rules before it reaches a device.

Rules (research.md, "TensorRT and INT8 on Jetson"):
- opset of the default domain >= 13 (per-channel Q/DQ);
- every QuantizeLinear has an explicit zero point (without one the output is uint8), and every zero point
  is int8 and 0 (signed, symmetric);
- weight Q/DQ may be per-channel, but only on the output-channel axis of the consumer: Conv weight
  [O,I,kh,kw] axis 0, ConvTranspose [I,O/g,...] axis 1, Gemm B axis 0 with transB=1 else 1, MatMul B
  its last axis; activation Q/DQ are per-tensor (one scale);
- no Q/DQ on a bias (input 2 of Conv, ConvTranspose, Gemm): TensorRT quantises bias itself;
- no quantised Softmax (a Softmax fed by a DequantizeLinear or feeding a QuantizeLinear).

    problems = lint_trt(onnx.load("global.int8.trt.onnx"))   # [] when it passes
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

MIN_OPSET = 13
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}
BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}
QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Violation:
    """One broken rule: the node (or "<model>"), a short rule id and a sentence."""

    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: [{self.rule}] {self.message}"


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def _attr(node: onnx.NodeProto, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def expected_weight_axis(consumer: onnx.NodeProto, weight_rank: int) -> int:
    """Output-channel axis of the weight input of a Conv/ConvTranspose/Gemm/MatMul node."""
    op = consumer.op_type
    if op == "Conv":
        return 0
    if op == "ConvTranspose":
        return 1
    if op == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    return weight_rank - 1  # MatMul: B is [..., K, N], channels along N


def lint_trt(model: onnx.ModelProto) -> list[Violation]:
    """All TensorRT Q/DQ rule violations of `model` (empty list: it passes)."""
    graph = model.graph
    out: list[Violation] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < MIN_OPSET:
        out.append(Violation("<model>", "opset", f"opset {opset} < {MIN_OPSET}: per-channel Q/DQ needs 13+"))
    consts = _constants(graph)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for idx, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, idx))

    def from_weights(name: str) -> bool:
        """True when `name` is a constant, or a Q/DQ of one (a weight path)."""
        if name in consts:
            return True
        node = producer.get(name)
        return node is not None and node.op_type in QDQ and from_weights(node.input[0])

    def root_constant(name: str) -> np.ndarray:
        """The constant at the start of a weight path (call only when from_weights(name))."""
        return consts[name] if name in consts else root_constant(producer[name].input[0])

    def weight_consumers(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Linear ops that take this Q/DQ's output (through a following DQ for a Q) as their weight."""
        found = []
        for cons, idx in consumers.get(node.output[0], []):
            if cons.op_type == "DequantizeLinear":
                found += weight_consumers(cons)
            elif WEIGHT_INPUT.get(cons.op_type) == idx:
                found.append(cons)
        return found

    for node in graph.node:
        name = node.name or f"{node.op_type}({node.output[0]})"
        if node.op_type in QDQ:
            zp_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
            if zp_name is None:
                if node.op_type == "QuantizeLinear":
                    out.append(Violation(name, "signed", "no zero point: the output defaults to uint8"))
                elif node.input[0] in consts and consts[node.input[0]].dtype != np.int8:
                    out.append(Violation(name, "signed", f"input is {consts[node.input[0]].dtype}, not int8"))
            elif zp_name not in consts:
                out.append(Violation(name, "zero-point", "zero point is not a constant"))
            else:
                zp = consts[zp_name]
                if zp.dtype != np.int8:
                    out.append(Violation(name, "signed", f"zero point is {zp.dtype}, TensorRT needs int8"))
                if np.any(zp != 0):
                    out.append(Violation(name, "zero-point", "zero point is not 0 (asymmetric quantisation)"))
            scale = consts.get(node.input[1])
            if scale is None:
                out.append(Violation(name, "scale", "scale is not a constant"))
                continue
            if scale.size > 1:
                if not from_weights(node.input[0]):
                    out.append(Violation(name, "per-tensor", f"activation Q/DQ has {scale.size} scales; "
                                         "activations must be per-tensor"))
                else:
                    axis = int(_attr(node, "axis", 1))
                    rank = root_constant(node.input[0]).ndim
                    for cons in weight_consumers(node):
                        want = expected_weight_axis(cons, rank)
                        if axis % max(rank, 1) != want:
                            out.append(Violation(name, "channel-axis", f"per-channel axis {axis} for {cons.op_type} "
                                                 f"{cons.name or cons.output[0]}; TensorRT needs axis {want}"))
        elif node.op_type in BIAS_INPUT and len(node.input) > BIAS_INPUT[node.op_type]:
            bias = node.input[BIAS_INPUT[node.op_type]]
            src = producer.get(bias)
            if src is not None and src.op_type in QDQ:
                out.append(Violation(name, "bias", f"bias {bias} is quantised; leave bias FP32"))
        elif node.op_type == "Softmax":
            src = producer.get(node.input[0])
            fed_q = any(c.op_type == "QuantizeLinear" for c, _ in consumers.get(node.output[0], []))
            if (src is not None and src.op_type == "DequantizeLinear") or fed_q:
                out.append(Violation(name, "softmax", "Softmax is quantised; keep it FP32"))
    return out

