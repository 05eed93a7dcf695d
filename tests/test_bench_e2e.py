"""The INT8 micro-graphs of benchmarks/_common.py and their MAC counts (no timing here; the counter itself:
tests/test_cost_model.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import conv_graph, matmul_graph, optimized_op_types  # noqa: E402
from edge_runtime.cost.graph_cost import count_macs  # noqa: E402


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
