"""The cost model (edge_runtime.cost): MACs and bytes of hand-built graphs against hand-computed numbers,
the device estimate's arithmetic, `mgfen-bench --estimate` and the export report's `cost` section."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cli_runner import stderr_runner
from edge_runtime import names
from edge_runtime.cli.bench_cli import main as bench_main
from edge_runtime.cost import devices
from edge_runtime.cost import graph_cost as gc
from edge_runtime.cost import estimate
from edge_runtime.cost.devices import (DEPTHWISE_PENALTY, DEVICES, ESTIMATE_LABEL, cpu_scale, frame_estimate,
                                       graph_ms, opencv_threads, resolve_devices)
from edge_runtime.cost.graph_cost import count_macs, graph_cost
from fake_bundle import make_fake_bundle


def _init(name, shape):
    return numpy_helper.from_array(np.full(shape, 0.01, np.float32), name)


def tiny_graph() -> onnx.ModelProto:
    """x [2,8,10,10] -> Conv 3x3 8->16 (pad 1) -> depthwise Conv 3x3 (stride 2, pad 1) -> grouped Conv 1x1
    (4 groups, 16->8) -> Flatten -> Gemm (transB) 200->5 and a MatMul [2,1,200]x[200,3] (batch broadcast)."""
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


# hand-computed for tiny_graph
MACS = {"Conv": 2 * 16 * 10 * 10 * 8 * 9,          # dense 3x3: N*Cout*H*W*Cin*k*k
        "ConvDepthwise": 2 * 16 * 5 * 5 * 1 * 9,   # stride 2 -> 5x5 output, 1 input channel each
        "ConvGrouped": 2 * 8 * 5 * 5 * 4,          # 16 in / 4 groups = 4 inputs per output
        "Gemm": 2 * 5 * 200, "MatMul": 2 * 1 * 3 * 200}
PARAM_BYTES = (16 * 8 * 9 + 16 * 9 + 8 * 4 + 5 * 200 + 200 * 3) * 4 + 3 * 8  # float32 weights + int64 shape
# c1, c2, c3, f, g, f3, m in float32
ACTIVATION_BYTES = (2 * 16 * 10 * 10 + 2 * 16 * 5 * 5 + 2 * 8 * 5 * 5 + 2 * 200 + 2 * 5 + 2 * 200 + 2 * 3) * 4


def test_macs_and_bytes_of_a_hand_built_graph():
    cost = graph_cost(tiny_graph())
    assert cost.macs == {**MACS, "total": sum(MACS.values())}
    assert cost.depthwise_macs == MACS["ConvDepthwise"]
    assert cost.dense_macs == sum(MACS.values()) - MACS["ConvDepthwise"]
    assert cost.param_bytes == PARAM_BYTES
    assert cost.activation_bytes == ACTIVATION_BYTES
    assert cost.largest_activation == ("c1", 2 * 16 * 10 * 10 * 4)
    assert cost.input_bytes == 2 * 8 * 10 * 10 * 4 and cost.inputs == {"x": (2, 8, 10, 10)} and cost.nodes == 7
    assert count_macs(tiny_graph()) == cost.macs


def test_shapes_inference_leaves_open_are_measured_by_one_run(monkeypatch):
    """A graph whose shapes inference cannot settle (data-dependent pads, as the exported EfficientNet's
    'same' padding) gets them from one onnxruntime run: the same numbers."""
    real = gc.tensor_types

    def blind(model):
        shapes, elem = real(model)
        return {k: None for k in shapes}, elem

    monkeypatch.setattr(gc, "tensor_types", blind)
    cost = graph_cost(tiny_graph())
    assert cost.macs["total"] == sum(MACS.values()) and cost.activation_bytes == ACTIVATION_BYTES


def test_graph_needs_fixed_input_shapes():
    model = tiny_graph()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    with pytest.raises(ValueError, match="fixed shape"):
        graph_cost(model)


def test_device_rates_come_from_the_published_figures():
    # ResNet-50's own MACs give back its MLPerf latency on the two measured devices
    for key, ms in devices.MLPERF_RESNET50_MS.items():
        assert graph_ms(devices.RESNET50_MACS, 0, DEVICES[key]) == pytest.approx(ms)
    nano, nx = DEVICES["orin-nano"], DEVICES["orin-nx"]
    assert nano.int8_macs_per_s == pytest.approx(nx.int8_macs_per_s * 40 / 100)
    assert "scaled estimate" in nano.derivation
    assert [d.key for d in resolve_devices("all")] == list(DEVICES)
    with pytest.raises(ValueError, match="unknown device"):
        resolve_devices("xavier")


def test_estimate_is_linear_in_macs_and_charges_depthwise_extra():
    dev = DEVICES["orin-nx"]
    one = graph_ms(1e9, 0, dev)
    assert graph_ms(3e9, 0, dev) == pytest.approx(3 * one)
    assert graph_ms(0, 1e9, dev) == pytest.approx(DEPTHWISE_PENALTY * one)
    assert graph_ms(2e9, 1e9, dev, depthwise_penalty=4.0) == pytest.approx(6 * one)
    small = frame_estimate({"global": (1e9, 0), "parts": (0.5e9, 0)}, 0.0, dev, None)
    big = frame_estimate({"global": (2e9, 0), "parts": (1e9, 0)}, 0.0, dev, None)
    assert big["gpu_ms"] == pytest.approx(2 * small["gpu_ms"], rel=1e-3)
    assert small["gpu_ms"] == pytest.approx(1.5 * one, rel=1e-3) and small["label"] == ESTIMATE_LABEL


def test_cpu_stages_scale_by_clock_and_per_clock_factor():
    nano = DEVICES["orin-nano"]  # 1.5 GHz
    assert cpu_scale(nano, 3.0, "x86_64") == pytest.approx(2.0 * devices.HOST_PER_CLOCK["x86_64"])
    assert cpu_scale(nano, 1.5, "aarch64") == pytest.approx(1.0)
    assert cpu_scale(nano, None) == 1.0
    est = frame_estimate({"global": (0.0, 0.0)}, 10.0, nano, 3.0, "aarch64")
    assert est["cpu_ms"] == pytest.approx(20.0) and est["total_ms"] == pytest.approx(20.0)
    assert est["fps"] == pytest.approx(50.0) and est["fps_overlapped"] == pytest.approx(50.0)


def test_cpu_stages_get_the_device_cores_less_two_never_more_than_were_timed():
    nano, nx, agx = DEVICES["orin-nano"], DEVICES["orin-nx"], DEVICES["agx-orin"]
    assert [opencv_threads(d, 2) for d in (nano, nx, agx)] == [2, 2, 2]
    assert [opencv_threads(d, 16) for d in (nano, nx, agx)] == [4, 6, 10]
    assert opencv_threads(nano, 1) == 1
    est = frame_estimate({"global": (0.0, 0.0)}, 5.0, nano, 1.5, "aarch64", threads=2, host_one_core_ms=8.0)
    assert est["cpu_ms"] == pytest.approx(5.0) and est["fps"] == pytest.approx(200.0)
    assert est["cpu_ms_one_core"] == pytest.approx(8.0) and est["fps_one_core"] == pytest.approx(125.0)
    assert est["opencv_threads"] == 2


def test_estimate_charges_each_device_its_timed_thread_count(fake_dir, monkeypatch):
    """A 16-core host: every distinct count is timed once, each device's CPU time is its own count's."""
    calls = []

    def fake_measure(cfg, k, use_parts=True, frames=20, warmup=3, threads=1):
        calls.append(threads)
        return {"preprocess_ms": 12.0 / threads, "crop_ms": 0.0, "total_ms": 12.0 / threads,
                "median_ms": 12.0 / threads, "frames": frames, "opencv_threads": threads, "frame_side": 64}

    monkeypatch.setattr(estimate, "measure_host_cpu_ms", fake_measure)
    monkeypatch.setattr(estimate, "host_cores", lambda: 16)
    monkeypatch.setattr(estimate, "cpu_ghz", lambda: None)  # unscaled: device ms = host ms
    from edge_runtime.preprocess import PreprocessConfig
    est = estimate.estimate_bundle(fake_dir, PreprocessConfig(frame_size=64, global_size=32, crop_size=16), 4,
                                   True, DEVICES.values())
    assert sorted(calls) == [1, 4, 6, 10] and sorted(est["host_threads"], key=int) == ["1", "4", "6", "10"]
    for key, n in (("orin-nano", 4), ("orin-nx", 6), ("agx-orin", 10)):
        e = est["estimates"][key]
        assert e["opencv_threads"] == n and e["cpu_ms"] == pytest.approx(12.0 / n, abs=0.01)
        assert e["cpu_ms_one_core"] == pytest.approx(12.0)
    assert "10 OpenCV thread(s)" in estimate.format_estimate(est)


def test_host_clock_from_cpuinfo(tmp_path, monkeypatch):
    from edge_runtime.inference import device_info
    from edge_runtime.inference.device_info import cpu_ghz as host_cpu_ghz

    monkeypatch.setattr(device_info, "cpu_clocks", lambda: None)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\ncpu MHz\t\t: 2596.142\n")
    assert host_cpu_ghz(str(info)) == pytest.approx(2.596142)
    assert host_cpu_ghz(str(tmp_path / "absent")) is None


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    return make_fake_bundle(tmp_path_factory.mktemp("cost") / "bundle")


def test_bench_estimate_prints_every_device_and_runs_no_benchmark(fake_dir):
    res = stderr_runner().invoke(bench_main, ["--bundle", str(fake_dir), "--estimate", "all"])
    assert res.exit_code == 0, res.output
    for key in DEVICES:
        assert f"\n{key} " in res.stdout
    assert ESTIMATE_LABEL in res.stdout and "benchmarking" not in res.stderr
    # the fake graphs are two MatMuls [1,3]x[3,2] and [K,3]x[3,2], K = 4
    assert "global" in res.stdout and "parts" in res.stdout


def test_bench_estimate_json_names_the_chosen_device(fake_dir):
    res = stderr_runner().invoke(bench_main, ["--bundle", str(fake_dir), "--estimate", "orin-nano", "--json", "-"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    est = doc["estimate"]
    assert list(est["estimates"]) == ["orin-nano"] and est["label"] == ESTIMATE_LABEL
    assert est["graphs"]["global"]["macs"] == {"MatMul": 3 * 2, "total": 3 * 2}
    assert est["graphs"]["parts"]["macs"]["total"] == 4 * 3 * 2
    assert est["estimates"]["orin-nano"]["fps"] > 0 and est["host"]["preprocess_ms"] > 0
    assert "orin-nano" in res.stderr  # the table goes to stderr when the JSON takes stdout


def test_bench_estimate_unknown_device_is_one_line(fake_dir):
    res = stderr_runner().invoke(bench_main, ["--bundle", str(fake_dir), "--estimate", "xavier"])
    assert res.exit_code == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "'xavier' is not one of" in errors[0] and "orin-nano" in errors[0]
    assert "Traceback" not in res.stderr


def test_export_report_has_the_cost_of_its_graphs(tmp_path):
    """A tiny EfficientNet-Lite0 MGFEN (untrained head) exported: the report's cost section counts the
    bundle's own files (depthwise convs included) and estimates every device; mgfen-bench agrees."""
    torch = pytest.importorskip("torch")
    from export.bundle import ExportConfig, export_model
    from train.model.mgfen import ModelConfig, build_model
    from edge_runtime.preprocess import PreprocessConfig

    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = ModelConfig(backbone="efficientnet_lite0", fpn_channels=16,
                      preprocess=PreprocessConfig(frame_size=128, global_size=64, crop_size=32))
    model = build_model(cfg, pretrained="auto").eval()  # offline ImageNet weights: no ties in the peaks
    info = {"classes": list(names.CLASS_NAMES), "thresholds": None}
    out = tmp_path / "bundle"
    report = export_model(model, info, {"checkpoint": "fresh"}, out, ExportConfig(parity_frames=3))
    cost = report["cost"]
    assert list(cost["estimates"]) == list(DEVICES) and cost["label"] == ESTIMATE_LABEL
    for g in names.GRAPHS:
        assert cost["graphs"][g]["macs"] == count_macs(onnx.load(str(out / names.model_file(g))))
        assert cost["graphs"][g]["depthwise_macs"] > 0 and cost["graphs"][g]["activation_bytes"] > 0
    assert json.loads((out / names.REPORT_FILE).read_text())["cost"]["graphs"] == cost["graphs"]
    res = stderr_runner().invoke(bench_main, ["--bundle", str(out), "--estimate", "all", "--json", "-"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["estimate"]["graphs"] == cost["graphs"]
