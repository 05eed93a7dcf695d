"""INT8 that passes the verdict gate (issue 18 item 3), without torch: a planted layer that ruins INT8 is
found by the sensitivity ranking, refused by the gate without the search and rescued by keeping it FP32;
the search's step logic; the cached calibration ranges; the CPU flavour's reduce_range chosen from the CPU
flags (injected, never this machine's). The export side (flags, manifest record) is in test_export.py."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from calibration import CalibrationError
from calibration.accuracy import OrtPipeline, PipelineParams, make_session
from calibration.cpu_features import choose_reduce_range, read_cpu_flags
from calibration.fallback import (GateProbe, Quantiser, novelty_swaps_only, search_flavour, sensitivity_feeds,
                                 smallest_passing)
from calibration.quantize import prepare_for_quantization, quantize_graph
from calibration.reader import GlobalReader, PartsReader
from calibration.sensitivity import rank_nodes
from calibration.verdict_gate import GateCriteria
from edge_runtime import names
from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.roi import Thresholds
from fake_bundle import global_graph, make_image, parts_graph

CFG = PreprocessConfig(frame_size=128, global_size=64, crop_size=32, ace=False, brightness_target=None)
OUTLIER = 1000.0
PLANTED = ("spoiler", "mix")


def planted_global(cfg: PreprocessConfig, k: int) -> onnx.ModelProto:
    """The fake global graph (colour rule, tests/fake_bundle.py) with its colour head fed through three 1x1
    convolutions: `entry` passes R, G, B through (the first Conv: the TensorRT flavour's FP32 stem),
    `spoiler` passes them on and adds a 4th channel that is a constant OUTLIER, `mix` drops it again. In FP32 the model is unchanged. In INT8 the tensor between them has
    one per-tensor scale for [0, OUTLIER]: one step is ~4, so the colour channels in [0, 1] round to 0
    and every verdict is lost, whatever the calibration method (the outlier is a quarter of the values,
    not a tail any method clips)."""
    g = global_graph(cfg, k)
    spoil_w = np.zeros((4, 3, 1, 1), np.float32)
    mix_w = np.zeros((3, 4, 1, 1), np.float32)
    for c in range(3):
        spoil_w[c, c] = mix_w[c, c] = 1.0
    g.graph.initializer.extend([
        numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "entry_w"),
        numpy_helper.from_array(np.zeros(3, np.float32), "entry_b"),
        numpy_helper.from_array(spoil_w, "spoil_w"),
        numpy_helper.from_array(np.array([0, 0, 0, OUTLIER], np.float32), "spoil_b"),
        numpy_helper.from_array(mix_w, "mix_w"), numpy_helper.from_array(np.zeros(3, np.float32), "mix_b")])
    head = next(n for n in g.graph.node if n.op_type == "ReduceMean" and n.output[0] == "g_mean")
    head.input[0] = "mixed"
    nodes = [helper.make_node("Conv", [names.GLOBAL_INPUT, "entry_w", "entry_b"], ["entered"], name="entry"),
             helper.make_node("Conv", ["entered", "spoil_w", "spoil_b"], ["spoiled"], name="spoiler"),
             helper.make_node("Conv", ["spoiled", "mix_w", "mix_b"], ["mixed"], name="mix"), *g.graph.node]
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    onnx.checker.check_model(g, full_check=True)
    return g


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Red (genuine) and blue (counterfeit) frames in train/ (calibration) and val/ (the gate), the planted
    graphs, their prepared copies, a Quantiser, a GateProbe (global logits only: the parts graph is
    quantised but the vote does not read it, so the planted layer decides every verdict)."""
    root = tmp_path_factory.mktemp("planted")
    for split, count, offset in (("train", 6, 0), ("val", 5, 50)):
        for ci, (cls, colour) in enumerate((("genuine", "red"), ("counterfeit", "blue"))):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                cv2.imwrite(str(folder / f"{i}.png"), make_image(colour, 128, 128, seed=100 * ci + i + offset))
    onnx.save(planted_global(CFG, 4), root / "global.onnx")
    onnx.save(parts_graph(CFG, 4), root / "parts.onnx")
    params = PipelineParams(CFG, 1.0, False, 1)
    fp32 = OrtPipeline(root / "global.onnx", root / "parts.onnx", params)
    probe = GateProbe(fp32, params, root / "val", names.CLASS_NAMES, Thresholds(0.3, 0.7), GateCriteria())
    work = root / "work"
    work.mkdir()
    prepared = {g: prepare_for_quantization(root / names.model_file(g), work / f"{g}.pre.onnx") for g in names.GRAPHS}
    paths = sorted((root / "train").rglob("*.png"))
    readers = {"global": GlobalReader(paths, CFG),
               "parts": PartsReader(paths, CFG, make_session(root / names.model_file("global")))}
    return Quantiser(prepared, readers, work), probe, sensitivity_feeds(readers)


def test_fp32_model_is_right_on_every_val_image(planted):
    _, probe, _ = planted
    assert probe.labels.tolist() == [1] * 5 + [0] * 5  # counterfeit/ sorts first
    assert np.all((probe.reference.probs > 0.99) == (probe.labels == 1))
    assert np.all((probe.reference.probs < 0.01) == (probe.labels == 0))


def test_ranking_puts_the_planted_tensor_first(planted):
    quantiser, _, feeds = planted
    full = quantiser.quantise("cpu", "minmax", False)
    ranking = rank_nodes({g: (quantiser.prepared[g], full[g].path, feeds[g]) for g in names.GRAPHS})
    assert {n.name for n in ranking[:2]} == set(PLANTED) and {n.tensor for n in ranking[:2]} == {"spoiled"}
    assert ranking[0].nsr > 0.5, "the colour channels of the spoiled tensor round to zero"
    assert all(n.nsr < 0.1 for n in ranking[2:]), [n.to_dict() for n in ranking]


def conv_head_net(name: str, w: np.ndarray, b: np.ndarray, relu: bool, rng: np.random.Generator,
                  conv_out: str = "c") -> onnx.ModelProto:
    """image [1,3,16,16] -> Conv(w [C,3,3,3], b [C]) -> conv_out -> (Relu) -> GlobalAveragePool -> Flatten ->
    Gemm (weights drawn from rng) -> logits [1,2]."""
    f32 = onnx.TensorProto.FLOAT
    inits = [numpy_helper.from_array(w.astype(np.float32), "w"), numpy_helper.from_array(b.astype(np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (2, len(b))).astype(np.float32), "fc_w"),
             numpy_helper.from_array(np.zeros(2, np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["image", "w", "b"], [conv_out], pads=[1, 1, 1, 1], name="conv")]
    if relu:
        nodes.append(helper.make_node("Relu", [conv_out], ["r"], name="relu"))
    nodes += [helper.make_node("GlobalAveragePool", ["r" if relu else conv_out], ["g"], name="gap"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("image", f32, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", f32, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def relu_net() -> onnx.ModelProto:
    """conv_head_net with Conv(8) -> Relu: the conv's output is half negative, which the Relu clips."""
    rng = np.random.default_rng(3)
    return conv_head_net("relu_net", rng.normal(0, 0.5, (8, 3, 3, 3)), np.full(8, -0.2), True, rng)


def test_a_relu_the_quantiser_removed_is_not_counted_as_noise(tmp_path):
    """The cpu flavour (uint8 activations) drops the Relu and lets the uint8 range clip at zero instead:
    the conv's output before the Q/DQ pair still holds the negative values. Compared with the clipped
    values, as the FP32 graph computes them, the pair adds the noise of 8-bit rounding only."""
    onnx.save(relu_net(), tmp_path / "net.onnx")
    pre = prepare_for_quantization(tmp_path / "net.onnx", tmp_path / "pre.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"image": rng.random((1, 3, 16, 16)).astype(np.float32)} for _ in range(6)]

    class Feeds:
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    res = quantize_graph(pre, tmp_path / "q.onnx", Feeds(), "cpu", "minmax", prepared=True)
    assert "relu" not in {n.name for n in onnx.load(str(res.path)).graph.node}, "the quantiser removed the Relu"
    ranking = rank_nodes({"global": (pre, res.path, feeds)})
    conv = next(n for n in ranking if n.name == "conv")
    assert conv.tensor == "r" and conv.nsr < 0.05, [n.to_dict() for n in ranking]


@pytest.mark.parametrize("flavour", ["cpu", "trt"])
@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_planted_layer_is_refused_without_the_search_and_rescued_with_it(planted, flavour, method):
    quantiser, probe, feeds = planted
    plain = search_flavour(quantiser, None, flavour, method, False, feeds)
    assert plain.trials == [] and plain.kept == () and plain.passed is None
    numbers, why = probe.check({g: r.path for g, r in plain.files.items()}, flavour)
    assert why is not None and numbers["agreement"] == 0.0, "full INT8 loses every verdict: the gate refuses it"

    lines: list[str] = []
    found = search_flavour(quantiser, probe, flavour, method, False, feeds, log=lines.append)
    assert found.passed and found.method == method
    assert {n.name for n in found.kept} == set(PLANTED), "the two nodes that quantise the spoiled tensor, no more"
    assert [t["kept_fp32"] for t in found.trials] == [0, 1, 2] and len(lines) == 3
    assert found.before["agreement"] == 0.0 and found.after["agreement"] == 1.0
    kept = {n for r in found.files.values() for n in r.fallback}
    assert kept == set(PLANTED)
    _, why = probe.check({g: r.path for g, r in found.files.items()}, flavour)
    assert why is None
    record = found.record()
    assert record["gate_before"]["verdicts_changed"] == 10 and record["gate_after"]["verdicts_changed"] == 0
    assert record["kept_fp32"] == [{"graph": "global", "node": n.name, "op_type": "Conv"} for n in found.kept]
    assert record["method"] == method and record["searched"] and record["trials"] == 3


def test_a_cap_too_small_leaves_the_flavour_failed(planted):
    quantiser, probe, feeds = planted
    lines: list[str] = []
    res = search_flavour(quantiser, probe, "cpu", "minmax", False, feeds, max_nodes=1, log=lines.append)
    assert res.passed is False and res.kept == () and res.method == "minmax"
    assert res.after == res.before and res.after["agreement"] == 0.0
    assert {n for r in res.files.values() for n in r.fallback} == set()
    # every method tried, each with the full graph and the one node the cap allows (percentile too: this
    # fake graph's near-constant tensors made onnxruntime's default percentile calibrator fail)
    tried = [(t["method"], t["kept_fp32"]) for t in res.trials]
    assert tried == [("minmax", 0), ("minmax", 1), ("entropy", 0), ("entropy", 1), ("percentile", 0),
                     ("percentile", 1)]
    assert not any("skipped" in line for line in lines)


class _SwapProbe:
    """A probe whose every gate fails on 2 of 64 changed verdicts, `swaps` of them unknown in one
    precision only, novelty scores within tolerance, no accuracy drop."""

    criteria = GateCriteria()

    def __init__(self, swaps: int) -> None:
        self.swaps = swaps

    def check(self, files: dict, flavour: str) -> tuple[dict, str]:
        return ({"n": 64, "agreement": 62 / 64, "verdicts_changed": 2, "drop_points": 0.0, "abs_dp": {"max": 0.1},
                 "novelty": {"unknown_changed": self.swaps, "within_tolerance": True}}, "verdicts differ")


def test_the_search_stops_when_only_novelty_swaps_fail_the_gate(planted):
    quantiser, _, feeds = planted
    lines: list[str] = []
    res = search_flavour(quantiser, _SwapProbe(2), "trt", "minmax", False, feeds, max_nodes=1, log=lines.append)
    assert res.passed is False and len(res.trials) == 1 and res.kept == ()
    assert "novelty threshold" in res.record()["stopped"] and lines[-1].startswith("INT8 trt search: stopped:")
    other = search_flavour(quantiser, _SwapProbe(1), "trt", "minmax", False, feeds, max_nodes=1)
    assert other.stopped is None and len(other.trials) == 6, "one change is not a swap: the whole search runs"
    numbers = _SwapProbe(2).check({}, "trt")[0]
    assert novelty_swaps_only(numbers, GateCriteria())
    assert not novelty_swaps_only({**numbers, "drop_points": 3.1}, GateCriteria())
    assert not novelty_swaps_only({**numbers, "novelty": {"unknown_changed": 2, "within_tolerance": False}},
                                  GateCriteria())

@pytest.mark.parametrize("needed, limit, expected, tried", [
    (1, 32, 1, [1]),
    (2, 32, 2, [1, 2]),
    (5, 32, 5, [1, 2, 4, 8, 6, 5]),
    (9, 12, 9, [1, 2, 4, 8, 12, 10, 9]),
    (13, 12, None, [1, 2, 4, 8, 12]),
])
def test_smallest_passing_doubles_then_bisects(needed, limit, expected, tried):
    calls: list[int] = []

    def trial(k: int) -> bool:
        calls.append(k)
        return k >= needed

    assert smallest_passing(trial, limit) == expected
    assert calls == tried


# ------------------------------------------------------------------------------------- quantisation


def test_cached_ranges_skip_calibration_and_give_the_same_file(planted, tmp_path):
    quantiser, _, _ = planted
    pre = quantiser.prepared["global"]
    reader = GlobalReader(quantiser.readers["global"].paths, CFG)
    ranges = tmp_path / "ranges.json"
    quantize_graph(pre, tmp_path / "a.onnx", reader, "cpu", "minmax", prepared=True, ranges=ranges)
    assert ranges.is_file()

    class Exhausted:
        def get_next(self):
            raise AssertionError("calibration ran although the ranges were cached")

    quantize_graph(pre, tmp_path / "b.onnx", Exhausted(), "trt", "minmax", prepared=True, ranges=ranges)
    quantize_graph(pre, tmp_path / "c.onnx", reader, "trt", "minmax", prepared=True)
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "c.onnx").read_bytes(), \
        "ranges cached by the cpu flavour serve the trt flavour unchanged"


def flat_net() -> onnx.ModelProto:
    """conv_head_net with Conv(4), weights of 1e-7 and bias 4, no Relu: the conv's output is 4 +- 1e-5 on
    every image, a near-constant tensor."""
    rng = np.random.default_rng(5)
    return conv_head_net("flat_net", rng.normal(0, 1, (4, 3, 3, 3)) * 1e-7, np.full(4, 4.0), False, rng, "flat")


@pytest.mark.parametrize("flavour, levels", [("cpu", 255), ("trt", 127)])
def test_percentile_calibrates_a_near_constant_tensor(tmp_path, flavour, levels):
    """onnxruntime's default percentile calibrator (histograms of |x| over the first batch's range) raised
    "Too many bins for data range" on such a tensor; with signed histograms (quantize.METHOD_OPTIONS) it
    calibrates, and the tensor's INT8 range ends within one quantisation step of its value 4 (percentile
    takes a histogram bin's left edge: 4 - 4 / 1024 here)."""
    onnx.save(flat_net(), tmp_path / "net.onnx")
    pre = prepare_for_quantization(tmp_path / "net.onnx", tmp_path / "pre.onnx")
    rng = np.random.default_rng(1)
    feeds = iter([{"image": rng.random((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)])

    class Feeds:
        def get_next(self):
            return next(feeds, None)

    res = quantize_graph(pre, tmp_path / "q.onnx", Feeds(), flavour, "percentile", prepared=True)
    q = onnx.load(str(res.path))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    quant = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "flat")
    scale, zero = float(inits[quant.input[1]]), int(inits[quant.input[2]])
    assert abs(scale * (levels - zero) - 4.0) <= scale, (scale, zero)


def _weights(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {i for n in model.graph.node if n.op_type == "Conv" for i in n.input[1:2]}
    return [inits[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.output[0] in consumers and n.input[0] in inits]


def test_reduce_range_gives_7_bit_weights(planted, tmp_path):
    quantiser, _, _ = planted
    pre = quantiser.prepared["global"]
    reader = GlobalReader(quantiser.readers["global"].paths, CFG)
    for reduce, low, high in ((True, -64, 64), (False, -127, 127)):  # onnxruntime: 7 bits = [-64, 64]
        res = quantize_graph(pre, tmp_path / f"{reduce}.onnx", reader, "cpu", "minmax", prepared=True,
                             reduce_range=reduce)
        weights = _weights(onnx.load(str(res.path)))
        assert weights and all(w.dtype == np.int8 for w in weights)
        assert min(int(w.min()) for w in weights) == low or max(int(w.max()) for w in weights) == high
        assert all(low <= int(w.min()) and int(w.max()) <= high for w in weights)
        assert res.reduce_range is reduce and res.to_dict()["reduce_range"] is reduce
    with pytest.raises(CalibrationError, match="cpu INT8 flavour only"):
        quantize_graph(pre, tmp_path / "t.onnx", reader, "trt", "minmax", prepared=True, reduce_range=True)


# ----------------------------------------------------------------------------------------- CPU flags


@pytest.mark.parametrize("flags, machine, reduce", [
    ({"sse4_2", "avx2", "fma"}, "x86_64", True),  # AVX2 only: VPMADDUBSW saturates
    ({"avx2", "avx512f", "avx512bw"}, "x86_64", True),  # AVX-512 without VNNI
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", False),
    ({"avx2", "avx_vnni"}, "x86_64", False),
    ({"avx2", "amx_int8", "amx_tile"}, "AMD64", False),
    (set(), "x86_64", True),  # flags unreadable on x86: assume the worst
    (set(), "aarch64", False),  # ARM: no such instruction pair
])
def test_reduce_range_follows_the_cpu_flags(flags, machine, reduce):
    choice = choose_reduce_range("auto", frozenset(flags), machine)
    assert choice.reduce_range is reduce and choice.mode == "auto" and choice.machine == machine
    assert ("VNNI" in choice.reason) == (machine.lower() in ("x86_64", "amd64") and reduce)
    assert set(choice.to_dict()["cpu_flags"]) <= set(flags)
    for mode, forced in (("on", True), ("off", False)):
        assert choose_reduce_range(mode, frozenset(flags), machine).reduce_range is forced


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 avx512_vnni\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert read_cpu_flags(info) == frozenset({"fpu", "sse2", "avx2", "avx512_vnni"})
    info.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")  # ARM
    assert read_cpu_flags(info) == frozenset()
    assert read_cpu_flags(tmp_path / "missing") == frozenset()
    with pytest.raises(CalibrationError, match="--reduce-range must be one of auto, on, off"):
        choose_reduce_range("sometimes", frozenset(), "x86_64")


class _FeaturePipe:
    """A stand-in pipeline: every frame P(counterfeit) 0.9 (argmax counterfeit) and pooled features `feats`
    [N,D] in frame order."""

    def __init__(self, feats: np.ndarray) -> None:
        self.feats, self.i = feats, 0

    def run_frame(self, frame):
        from calibration.accuracy import FrameResult

        f = self.feats[self.i % len(self.feats)]
        self.i += 1
        return FrameResult(np.array([0.0, np.log(9.0)]), 0.9, np.zeros((0, 4)), np.zeros(0), f.astype(np.float32))


def test_the_search_judges_unknown_decisions_as_the_export_gate_does(tmp_path):
    """With the bundle's novelty table the probe scores each pipeline's pooled features: an INT8 pipeline
    whose features drift past the threshold on some frames changes those verdicts (unknown in one
    precision only), as in run_gate, and fails; without the table the same pipeline passes."""
    from edge_runtime.novelty import fit_novelty

    for ci, (cls, colour) in enumerate((("genuine", "red"), ("counterfeit", "blue"))):
        (tmp_path / cls).mkdir()
        for i in range(4):
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), make_image(colour, 128, 128, seed=10 * ci + i))
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 8)) + 5.0
    table = fit_novelty(train, None)
    n = 8
    ref = train[:n].copy()
    drift = ref.copy()
    drift[: n // 2] = rng.normal(size=(n // 2, 8)) * 5.0  # far from the train features: unknown
    params = PipelineParams(CFG, 1.0, False, 1)
    with_table = GateProbe(_FeaturePipe(ref), params, tmp_path, names.CLASS_NAMES,
                           Thresholds(0.3, 0.7), GateCriteria(), novelty=table)
    assert with_table.reference.novelty is not None
    numbers, why = with_table.judge(_FeaturePipe(drift))
    assert numbers["novelty"]["unknown_changed"] >= n // 2 - 1 and why is not None
    without = GateProbe(_FeaturePipe(ref), params, tmp_path, names.CLASS_NAMES,
                        Thresholds(0.3, 0.7), GateCriteria())
    numbers, why = without.judge(_FeaturePipe(drift))
    assert numbers["agreement"] == 1.0 and why is None
