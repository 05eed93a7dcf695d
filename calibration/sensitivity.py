"""Which nodes of a QDQ graph lose the most to INT8: one run of the graph on a few calibration frames.

For every QuantizeLinear -> DequantizeLinear pair the quantiser wrote, the noise it adds to its tensor x is
measured where it happens, inside the QDQ graph (x is the QDQ graph's own value, so error from upstream
pairs is not counted again): per channel (axis 1) NSR_c = ||DQ(Q(x))_c - x_c|| / ||x_c|| over the frames,
and the tensor's NSR is their median over the channels that are not all zero. Per channel, because the
failure this hunts is a per-tensor scale set by a few large channels that rounds the small, informative
ones to zero: an NSR over the whole tensor hides it (the noise is tiny next to the large channel). The
median, not the mean: a few near-silent channels (relative error ~1, little effect downstream) would
otherwise rank every pooled feature vector first; a scale that wipes out most channels moves the median. A
weight's pair (a DequantizeLinear of a constant; weights are quantised per channel already) compares the
whole dequantised weight with the FP32 graph's initializer. Where
the quantiser removed a Relu or Clip (asymmetric activations: the uint8 range clips instead), x is passed
through that activation first, so its intended clipping is not counted as noise. A
node's score is the largest NSR among the tensors it has quantised: its activation inputs, its weights
and its output. Nodes that share a badly quantised tensor (its producer and its consumers) share its
score, so they rank next to each other: excluding one of them alone would leave the tensor quantised by
the others (onnxruntime quantises a tensor when any node touching it is quantised).

One run, not one quantisation per node: the graph runs with onnxruntime's optimisations off (Q/DQ as
operators, as calibration.accuracy simulates the TensorRT flavour), with the pre- and post-Q/DQ tensors
added as outputs; NSR is accumulated frame by frame, nothing is kept per frame. It measures rounding and
clipping, not the int16 saturation of fused U8S8 kernels on CPUs without VNNI (calibration.cpu_features
avoids that with 7-bit weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
NSR_CAP = 1e6  # the NSR of a channel that is zero in FP32 but not after Q/DQ


@dataclass(frozen=True)
class NodeScore:
    """One quantised node: graph ("global" | "parts"), node name, op type, its worst tensor and that
    tensor's NSR (noise-to-signal ratio, 0 = exact; 0.01 is about 40 dB SQNR)."""

    graph: str
    name: str
    op_type: str
    tensor: str
    nsr: float

    def to_dict(self) -> dict:
        return {"graph": self.graph, "node": self.name, "op_type": self.op_type, "tensor": self.tensor,
                "nsr": round(self.nsr, 6)}


@dataclass(frozen=True)
class _Pair:
    """One Q/DQ pair: the tensor before it (`pre`, a QDQ-graph tensor; None for a constant quantised
    offline), the DequantizeLinear output (`post`) and the original tensor name it stands for."""

    pre: str | None
    post: str
    original: str


def _pairs(model: onnx.ModelProto) -> list[_Pair]:
    producers = {o: n for n in model.graph.node for o in n.output}
    pairs = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producers.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear":
            pairs.append(_Pair(q.input[0], node.output[0], q.input[0]))
        elif q is None:  # a weight stored quantised: its FP32 value is named by the consumer (_node_pairs)
            pairs.append(_Pair(None, node.output[0], ""))
    return pairs


def _node_pairs(qdq: onnx.ModelProto, fp32: onnx.ModelProto, pairs: list[_Pair]) -> dict[str, list[_Pair]]:
    """{node name: the pairs it quantised}: pairs feeding its inputs, and those quantising its outputs.
    A constant's pair gets its FP32 initializer's name from the FP32 node of the same name."""
    by_post = {p.post: p for p in pairs}
    by_pre: dict[str, list[_Pair]] = {}
    for p in pairs:
        if p.pre is not None:
            by_pre.setdefault(p.pre, []).append(p)
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    out: dict[str, list[_Pair]] = {}
    for node in qdq.graph.node:
        ref = fp32_nodes.get(node.name)
        if node.op_type in QDQ_OPS or ref is None:
            continue
        mine = []
        for i, name in enumerate(node.input):
            p = by_post.get(name)
            if p is not None and p.pre is None and i < len(ref.input):
                p = _Pair(None, p.post, ref.input[i])
            if p is not None:
                mine.append(p)
        for name in node.output:
            mine += by_pre.get(name, [])
        if mine:
            out[node.name] = mine
    return out


def _removed_activations(fp32: onnx.ModelProto, qdq: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    """{tensor: (low, high)} for each Relu / Clip of the FP32 graph that the QDQ graph no longer has
    (its output name now carries the unclipped value of the node before it)."""
    kept = {n.name for n in qdq.graph.node}
    consts = {i.name: float(numpy_helper.to_array(i).reshape(-1)[0]) for i in fp32.graph.initializer
              if numpy_helper.to_array(i).size == 1}
    out = {}
    for node in fp32.graph.node:
        if node.name in kept or node.op_type not in ("Relu", "Clip"):
            continue
        if node.op_type == "Relu":
            out[node.output[0]] = (0.0, np.inf)
            continue
        attrs = {a.name: a.f for a in node.attribute}
        bounds = [consts.get(node.input[i], None) if len(node.input) > i and node.input[i] else None
                  for i in (1, 2)]
        low = bounds[0] if bounds[0] is not None else attrs.get("min", -np.inf)
        high = bounds[1] if bounds[1] is not None else attrs.get("max", np.inf)
        out[node.output[0]] = (low, high)
    return out


def _session_with_outputs(model: onnx.ModelProto, tensors: list[str]) -> ort.InferenceSession:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            present.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _channel_sums(values: np.ndarray, per_channel: bool) -> np.ndarray:
    """Sum of squares per channel (axis 1) of a float64 array, or one sum when not per_channel / ndim < 2."""
    if not per_channel or values.ndim < 2:
        return np.array([np.sum(values ** 2)])
    return np.sum(np.moveaxis(values, 1, 0).reshape(values.shape[1], -1) ** 2, axis=1)


def pair_noise(qdq: onnx.ModelProto, fp32: onnx.ModelProto, pairs: list[_Pair],
               feeds: Iterable[dict[str, np.ndarray]]) -> dict[str, float]:
    """{post tensor name: NSR} of every pair over the feeds ({input name: float32 array} per frame)."""
    consts = {i.name: numpy_helper.to_array(i) for i in fp32.graph.initializer}
    consts.update({i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer})
    clipped = _removed_activations(fp32, qdq)
    wanted = sorted({p.post for p in pairs} | {p.pre for p in pairs if p.pre is not None and p.pre not in consts})
    session = _session_with_outputs(qdq, wanted)
    noise: dict[str, np.ndarray] = {}
    signal: dict[str, np.ndarray] = {}
    frames = 0
    for feed in feeds:
        values = dict(zip(wanted, session.run(wanted, feed)))
        values.update(feed)
        for p in pairs:
            weight = p.pre is None or p.pre in consts
            ref = consts.get(p.original) if p.pre is None else values.get(p.pre, consts.get(p.pre))
            if ref is None:
                continue
            ref = np.asarray(ref, np.float64)
            if p.pre in clipped:
                ref = np.clip(ref, *clipped[p.pre])
            post = np.asarray(values[p.post], np.float64).reshape(ref.shape)
            noise[p.post] = noise.get(p.post, 0.0) + _channel_sums(post - ref, not weight)
            signal[p.post] = signal.get(p.post, 0.0) + _channel_sums(ref, not weight)
        frames += 1
    if frames == 0:
        raise ValueError("no frames to measure INT8 sensitivity on")
    out = {}
    for name, sig in signal.items():
        err = noise[name]
        live = (sig > 0) | (err > 0)
        ratios = np.where(sig[live] > 0, np.sqrt(err[live] / np.maximum(sig[live], 1e-300)), NSR_CAP)
        out[name] = float(min(NSR_CAP, np.median(ratios))) if ratios.size else 0.0
    return out


def rank_nodes(graphs: dict[str, tuple[Path, Path, list[dict[str, np.ndarray]]]]) -> list[NodeScore]:
    """Every quantised node of the graphs, worst first.

    graphs: {graph name: (FP32 file that was quantised, its QDQ file, a few feeds for it)}. Order: NSR
    descending, then the worst tensor's name (nodes sharing it stay together), then graph and node order.
    """
    ranked: list[tuple[float, str, int, int, NodeScore]] = []
    for g_index, (graph, (fp32_path, qdq_path, feeds)) in enumerate(graphs.items()):
        fp32, qdq = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
        pairs = _pairs(qdq)
        per_node = _node_pairs(qdq, fp32, pairs)
        nsr = pair_noise(qdq, fp32, [p for ps in per_node.values() for p in ps], feeds)
        order = {n.name: i for i, n in enumerate(qdq.graph.node)}
        op_types = {n.name: n.op_type for n in qdq.graph.node}
        for name, mine in per_node.items():
            worst = max(mine, key=lambda p: nsr.get(p.post, 0.0))
            score = NodeScore(graph, name, op_types[name], worst.original or worst.post, nsr.get(worst.post, 0.0))
            ranked.append((-score.nsr, score.tensor, g_index, order[name], score))
    return [r[-1] for r in sorted(ranked, key=lambda r: r[:4])]
