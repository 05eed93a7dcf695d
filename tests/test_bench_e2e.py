"""The MAC counter and the INT8 micro-graphs of benchmarks/_common.py (no timing here)."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import conv_graph, count_macs, matmul_graph, optimized_op_types  # noqa: E402


def _init(name, shape):
    return numpy_helper.from_array(np.full(shape, 0.01, np.float32), name)


def tiny_graph() -> onnx.ModelProto:
    """x [2,8,10,10] -> Conv 3x3 8->16 (pad 1) -> depthwise Conv 3x3 (stride 2, pad 1) -> grouped Conv 1x1
    (4 groups, 16->8) -> Flatten -> Gemm (transB) 200->5 and a MatMul [2,4,200]x[200,3] (batch broadcast)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2],
                         group=16),
        helper.make_node("Conv", ["c2", "w3"], ["c3"], kernel_shape=[1, 1], group=4),
        helper.make_node("Flatten", ["c3"], ["f"]),
        helper.make_node("Gemm", ["f", "w4"], ["g"], transB=1),
        helper.make_node("Reshape", ["f", "shape"], ["f3"]),
        helper.make_node("MatMul", ["f3", "w5"], ["m"]),
    ]
    inits = [_init("w1", (16, 8, 3, 3)), _init("w2", (16, 1, 3, 3)), _init("w3", (8, 4, 1, 1)),
             _init("w4", (5, 200)), _init("w5", (200, 3)),
             numpy_helper.from_array(np.array([2, 1, 200], np.int64), "shape")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 10, 10])],
                              [helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("m", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_count_macs_by_op_kind():
    macs = count_macs(tiny_graph())
    assert macs["Conv"] == 2 * 16 * 10 * 10 * 8 * 9          # dense 3x3: N*Cout*H*W*Cin*k*k
    assert macs["ConvDepthwise"] == 2 * 16 * 5 * 5 * 1 * 9   # stride 2 -> 5x5 output, 1 input channel each
    assert macs["ConvGrouped"] == 2 * 8 * 5 * 5 * 4          # 16 in / 4 groups = 4 inputs per output
    assert macs["Gemm"] == 2 * 5 * 200
    assert macs["MatMul"] == 2 * 1 * 3 * 200
    assert macs["total"] == sum(v for k, v in macs.items() if k != "total")


@pytest.mark.parametrize("int8", [False, True])
def test_micro_graphs_report_their_macs_and_fuse_to_integer_kernels(int8):
    conv, conv_macs = conv_graph(16, 32, 3, 12, int8=int8)
    dw, dw_macs = conv_graph(16, 16, 3, 12, group=16, int8=int8)
    mm, mm_macs = matmul_graph(8, 24, 40, int8=int8)
    assert count_macs(conv) == {"Conv": conv_macs, "total": 12 * 12 * 32 * 16 * 9}
    assert count_macs(dw) == {"ConvDepthwise": dw_macs, "total": 12 * 12 * 16 * 9}
    assert count_macs(mm) == {"MatMul": mm_macs, "total": 8 * 24 * 40}
    ops = optimized_op_types(conv) + optimized_op_types(dw) + optimized_op_types(mm)
    if int8:  # the QDQ pattern must run as onnxruntime's integer kernels, or the INT8 rate means nothing
        assert ops.count("QLinearConv") == 2 and ops.count("QLinearMatMul") == 1
        assert "Conv" not in ops and "MatMul" not in ops
    else:
        assert ops == ["Conv", "Conv", "MatMul"]


def test_count_macs_needs_fixed_input_shapes():
    model = tiny_graph()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(ValueError, match="fixed shape"):
        count_macs(model)
