"""What one run of an FP32 ONNX graph costs, read from the file: multiply-accumulates by op kind,
parameter bytes and activation bytes (every intermediate tensor, and the largest one).

    cost = graph_cost(onnx.load("bundle/global.onnx"))
    cost.macs["total"], cost.dense_macs, cost.depthwise_macs, cost.activation_bytes

Shapes come from ONNX shape inference; a tensor it leaves symbolic (data-dependent ops) is measured by one
onnxruntime run on zeros with that tensor added as an output. Every graph input needs a fixed shape. No
torch here: this runs on the device (mgfen-bench --estimate) and in the export report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# MAC categories: a Conv whose group equals its input channels (and > 1) is depthwise, any other group > 1
# grouped. Everything but the depthwise kind runs as dense GEMM-like work on a GPU.
DEPTHWISE = "ConvDepthwise"
MAC_KINDS = ("Conv", "ConvGrouped", DEPTHWISE, "ConvTranspose", "Gemm", "MatMul")

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class GraphCost:
    """One graph's cost for one run (batch as in the file).

    macs: {kind: MACs} over MAC_KINDS present, plus "total". param_bytes: initializers and Constant
    tensors. activation_bytes: sum over every node output (the graph's outputs included, Constant
    outputs not) at its dtype (float32 in an FP32 graph); largest_activation: (tensor name, bytes).
    input_bytes: the graph inputs. nodes: node count (kernel launches scale with it, not with MACs).
    """

    macs: Dict[str, int]
    param_bytes: int
    activation_bytes: int
    largest_activation: Tuple[str, int]
    input_bytes: int
    nodes: int
    inputs: Dict[str, Shape] = field(default_factory=dict)

    @property
    def depthwise_macs(self) -> int:
        return self.macs.get(DEPTHWISE, 0)

    @property
    def dense_macs(self) -> int:
        return self.macs["total"] - self.depthwise_macs

    def to_dict(self) -> dict:
        return {"macs": dict(self.macs), "dense_macs": self.dense_macs, "depthwise_macs": self.depthwise_macs,
                "param_bytes": self.param_bytes, "activation_bytes": self.activation_bytes,
                "largest_activation": {"name": self.largest_activation[0], "bytes": self.largest_activation[1]},
                "input_bytes": self.input_bytes, "nodes": self.nodes,
                "inputs": {k: list(v) for k, v in self.inputs.items()}}


def _input_shapes(model: onnx.ModelProto) -> Dict[str, Shape]:
    """Fixed shapes of the graph inputs that are not initializers; ValueError for a symbolic one."""
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        if any(d <= 0 for d in dims):
            raise ValueError(f"input {inp.name!r} has no fixed shape ({dims}); MACs need fixed shapes")
        out[inp.name] = tuple(dims)
    return out


def probe_shapes(model: onnx.ModelProto, tensors: Sequence[str],
                 elem_types: Optional[Dict[str, int]] = None) -> Dict[str, Shape]:
    """Concrete shapes of the named tensors: one onnxruntime run (zeros in, no graph optimisation) with
    those tensors added as graph outputs, typed by `elem_types` (float32 where not given). Exact where
    shape inference leaves a dimension symbolic."""
    import onnxruntime as ort  # only for graphs whose shapes inference cannot settle

    inputs = _input_shapes(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    for name in tensors:
        if name not in present:
            elem = (elem_types or {}).get(name, TensorProto.FLOAT)
            probe.graph.output.append(helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    types = {i.name: i.type.tensor_type.elem_type for i in probe.graph.input}
    feeds = {n: np.zeros(s, dtype=helper.tensor_dtype_to_np_dtype(types[n])) for n, s in inputs.items()}
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    wanted = list(dict.fromkeys(tensors))
    return {n: tuple(int(d) for d in o.shape) for n, o in zip(wanted, sess.run(wanted, feeds))}


def _static(vi: onnx.ValueInfoProto) -> Optional[Shape]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return tuple(dims) if all(d >= 0 for d in dims) else None


def tensor_types(model: onnx.ModelProto) -> Tuple[Dict[str, Optional[Shape]], Dict[str, int]]:
    """Shape inference over the whole graph: ({tensor: static shape or None}, {tensor: elem_type}) for
    every graph input, output and intermediate value."""
    _input_shapes(model)  # fails early, with the same message as probe_shapes
    inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    shapes: Dict[str, Optional[Shape]] = {}
    elem: Dict[str, int] = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        shapes[vi.name] = _static(vi) or shapes.get(vi.name)
        if vi.type.tensor_type.elem_type:
            elem[vi.name] = vi.type.tensor_type.elem_type
    return shapes, elem


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _itemsize(elem_type: int) -> int:
    return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)


def _macs(nodes: Sequence[onnx.NodeProto], shapes: Dict[str, Shape]) -> Dict[str, int]:
    macs: Dict[str, int] = {}

    def add(kind: str, value: int) -> None:
        macs[kind] = macs.get(kind, 0) + int(value)

    for n in nodes:
        a, b, y = shapes[n.input[0]], shapes[n.input[1]], shapes[n.output[0]]
        if n.op_type == "Conv":
            group = int(_attr(n, "group", 1))
            kind = "Conv" if group == 1 else (DEPTHWISE if group == a[1] else "ConvGrouped")
            # y: [N, Cout, *spatial]; w: [Cout, Cin/group, *kernel]
            add(kind, y[0] * y[1] * int(np.prod(y[2:])) * b[1] * int(np.prod(b[2:])))
        elif n.op_type == "ConvTranspose":
            # x: [N, Cin, *spatial]; w: [Cin, Cout/group, *kernel]
            add("ConvTranspose", a[0] * a[1] * int(np.prod(a[2:])) * b[1] * int(np.prod(b[2:])))
        elif n.op_type == "Gemm":
            k = a[0] if _attr(n, "transA", 0) else a[1]
            add("Gemm", int(np.prod(y)) * k)
        else:  # MatMul: every output element is one length-K dot product, whatever the broadcasting
            add("MatMul", int(np.prod(y)) * a[-1])
    macs["total"] = sum(macs.values())
    return macs


def graph_cost(model: onnx.ModelProto) -> GraphCost:
    """MACs, parameter and activation bytes of one run of `model` (an FP32 ONNX graph, fixed input shapes).

    MACs counted (weights as initializers or computed tensors alike):
      Conv           N * Cout * prod(out spatial) * (Cin / group) * prod(kernel)
                     (kind Conv, ConvGrouped for 1 < group < Cin, ConvDepthwise for group == Cin > 1)
      ConvTranspose  N * Cin * prod(in spatial) * (Cout / group) * prod(kernel)
      Gemm           M * N * K
      MatMul         (elements of the output) * K, i.e. batch * M * N * K after broadcasting
    Not counted: bias adds, activations, normalisation, pooling, Resize, elementwise ops, reductions
    (all O(elements), small next to the above in these CNNs).
    """
    shapes, elem = tensor_types(model)
    init = {i.name: tuple(int(d) for d in i.dims) for i in model.graph.initializer}
    params = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    const_outputs = set()
    for n in model.graph.node:
        if n.op_type == "Constant":
            const_outputs.update(n.output)
            value = _attr(n, "value", None)
            if isinstance(value, TensorProto):
                params += numpy_helper.to_array(value).nbytes
    counted = [n for n in model.graph.node if n.op_type in COUNTED_OPS]
    activations = [o for n in model.graph.node if n.op_type != "Constant" for o in n.output if o]
    needed = [t for n in counted for t in list(n.input[:2]) + [n.output[0]] if t and t not in init]
    needed += activations
    known: Dict[str, Shape] = dict(init)
    known.update({t: s for t, s in shapes.items() if s is not None})
    missing = [t for t in dict.fromkeys(needed) if t not in known]
    if missing:
        known.update(probe_shapes(model, missing, elem))
    sizes = {t: int(np.prod(known[t])) * _itemsize(elem.get(t, TensorProto.FLOAT)) for t in activations}
    largest = max(sizes.items(), key=lambda kv: kv[1]) if sizes else ("", 0)
    inputs = _input_shapes(model)
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    return GraphCost(macs=_macs(counted, known), param_bytes=int(params), activation_bytes=sum(sizes.values()),
                     largest_activation=(largest[0], int(largest[1])),
                     input_bytes=sum(int(np.prod(s)) * _itemsize(types[n]) for n, s in inputs.items()),
                     nodes=len(model.graph.node), inputs=inputs)


def count_macs(model: onnx.ModelProto) -> Dict[str, int]:
    """Multiply-accumulates of one run of an FP32 ONNX graph: {kind: MACs, "total": sum} (graph_cost's
    macs; kinds as documented there)."""
    return graph_cost(model).macs
