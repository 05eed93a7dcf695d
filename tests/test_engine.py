"""TensorRT engines: cache keys and recipes, reuse/rebuild, the engine check's gates, and build_plan ->
run_plan -> verify -> the CLI line end to end against tests/fake_tensorrt.py (TensorRT 8.5, 10, 11
behaviour) and tests/fake_cuda.py (both CUDA bindings, failures on demand).

TensorRT cannot run here: what a real Jetson adds (real kernels, real TF32/FP16 numerics, real driver
errors) is listed in docs/jetson_first_hour.md."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle, sha256_file, write_manifest
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.inference import device_info
from edge_runtime.inference.engine_cache import (INDEX_FILE, RECIPE_VERSION, DeviceInfo, build_recipe, cache_key,
                                       plan_name, write_index)
from export import engine, engine_check
from export.engine import ensure_engine
from fake_bundle import make_fake_bundle, make_image
from fake_cuda import FakeGpu, install
from fake_tensorrt import make_tensorrt

ORIN = DeviceInfo("10.3.0", "Orin", "8.7")


class FakeBuilder:
    """Counts builds; the 'plan' is the ONNX bytes' sha256 plus the recipe (deterministic)."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, onnx_path, recipe):
        self.calls.append((onnx_path.name, recipe.precision))
        return f"PLAN {sha256_file(onnx_path)} {recipe.fingerprint()}".encode()


def add_samples(root: Path, n: int = 3) -> Path:
    """Prepared calibration frames in the bundle, as `mgfen-export --int8` writes them (for the check)."""
    b = load_bundle(root)
    folder = root / "calibration"
    folder.mkdir(exist_ok=True)
    samples = {}
    size = b.manifest.preprocess.frame_size
    for i, colour in enumerate(["red", "blue", "grey", "blue", "red"][:n]):
        path = folder / f"sample{i}.png"
        cv2.imwrite(str(path), make_image(colour, size, size, seed=i))
        samples[f"calibration/{path.name}"] = sha256_file(path)
    write_manifest(root, dataclasses.replace(b.manifest, calibration={"samples": samples}))
    return root


@pytest.fixture()
def bundle(tmp_path):
    return load_bundle(make_fake_bundle(tmp_path / "b", int8=True))


def use_tensorrt(monkeypatch, gpu, version="10.3.0"):
    trt = make_tensorrt(gpu, version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


# --------------------------------------------------------------------------------- keys and recipes


def test_cache_key_is_pure_and_names_everything():
    key = cache_key("ab" * 32, ORIN, "int8")
    assert key == cache_key("ab" * 32, ORIN, "int8")
    assert key.digest() == cache_key("ab" * 32, DeviceInfo("10.3.0", "Orin", "8.7"), "int8").digest()
    old_recipe = dataclasses.replace(build_recipe("int8", "10.3.0"), version=RECIPE_VERSION - 1)
    variants = [cache_key("cd" * 32, ORIN, "int8"), cache_key("ab" * 32, ORIN, "fp16"),
                cache_key("ab" * 32, dataclasses.replace(ORIN, trt_version="8.5.2"), "int8"),
                cache_key("ab" * 32, dataclasses.replace(ORIN, gpu_name="Xavier"), "int8"),
                cache_key("ab" * 32, dataclasses.replace(ORIN, compute_capability="7.2"), "int8"),
                # Orin Nano, NX and AGX all say "Orin" and 8.7: the board tells them apart
                cache_key("ab" * 32, dataclasses.replace(ORIN, device_model="NVIDIA Jetson AGX Orin"), "int8"),
                cache_key("ab" * 32, dataclasses.replace(ORIN, device_id="nvidia,p3767-0005"), "int8"),
                # a plan built before a recipe fix
                cache_key("ab" * 32, ORIN, "int8", old_recipe),
                cache_key("ab" * 32, ORIN, "int8", dataclasses.replace(old_recipe, version=RECIPE_VERSION,
                                                                        workspace=1 << 28))]
    digests = {key.digest()} | {v.digest() for v in variants}
    assert len(digests) == 1 + len(variants)
    assert all(len(d) == 64 for d in digests)
    name = plan_name("global", key)
    assert name == f"global.int8.{key.digest()[:16]}.plan"
    with pytest.raises(BackendError, match="precision"):
        cache_key("ab" * 32, ORIN, "int4")


@pytest.mark.parametrize("precision, version, network, builder", [
    ("fp32", "8.5.2", ("EXPLICIT_BATCH",), ()),
    ("fp32", "10.3.0", (), ()),
    # fp16: the heatmap and box tail pinned FP32, and the pins obeyed
    ("fp16", "8.5.2", ("EXPLICIT_BATCH",), ("FP16", "OBEY_PRECISION_CONSTRAINTS")),
    ("fp16", "10.3.0", (), ("FP16", "OBEY_PRECISION_CONSTRAINTS")),
    # 8.x int8: INT8 alone -- FP16 would let the FP32 box-picking tail run in half precision
    ("int8", "8.5.2", ("EXPLICIT_BATCH",), ("INT8",)),
    ("int8", "10.3.0", ("STRONGLY_TYPED",), ()),
    ("int8", "11.1.0", ("STRONGLY_TYPED",), ()),
])
def test_build_recipe(precision, version, network, builder):
    recipe = build_recipe(precision, version)
    assert (recipe.network_flags, recipe.builder_flags) == (network, builder)
    assert recipe.cleared_flags == ("TF32",)  # TF32 is on by default and Orin runs it
    assert recipe.fp32_tail == ((names.HEATMAP,) if precision == "fp16" else ())


def test_jetson_board_reads_the_device_tree(tmp_path):
    tree = tmp_path / "proc/device-tree"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    (tree / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\x00nvidia,p3767-0005\x00nvidia,tegra234\x00")
    assert device_info.jetson_board(str(tmp_path)) == (
        "NVIDIA Jetson Orin Nano Developer Kit", "nvidia,p3768-0000+p3767-0005,nvidia,p3767-0005,nvidia,tegra234")
    assert device_info.jetson_board(str(tmp_path / "none")) == ("", "")
    info = DeviceInfo("10.3.0", "Orin", "8.7", "NVIDIA Jetson Orin Nano Developer Kit")
    assert info.label() == "Jetson Orin Nano Developer Kit (sm 8.7)"


# ------------------------------------------------------------------------------------- cache logic


def test_engine_built_once_then_reused(bundle):
    build = FakeBuilder()
    res = ensure_engine(bundle, "global", "int8", ORIN, build)
    plan = res.plan
    assert plan.parent == bundle.root / names.ENGINE_DIR and not res.cached
    # int8 engines come from the TensorRT-flavour QDQ file
    assert build.calls == [(names.model_file("global", "int8", "trt"), "int8")]
    assert plan.read_bytes().startswith(b"PLAN ")  # a plain plan: nothing prepended
    index = json.loads((plan.parent / INDEX_FILE).read_text())
    (digest, entry), = index.items()
    assert entry["file"] == plan.name and plan.name.endswith(digest[:16] + ".plan")
    assert entry["plan_sha256"] == sha256_file(plan)
    assert entry["key"]["onnx_sha256"] == sha256_file(bundle.root / names.model_file("global", "int8", "trt"))
    assert entry["recipe"]["cleared_flags"] == ["TF32"] and entry["recipe"]["version"] == RECIPE_VERSION
    again = ensure_engine(bundle, "global", "int8", ORIN, build)
    assert again.plan == plan and again.cached and len(build.calls) == 1


def test_other_tensorrt_gpu_or_board_rebuilds_and_drops_stale(bundle):
    build = FakeBuilder()
    first = ensure_engine(bundle, "global", "int8", ORIN, build).plan
    second = ensure_engine(bundle, "global", "int8", dataclasses.replace(ORIN, trt_version="10.16.0"), build).plan
    assert len(build.calls) == 2 and second != first
    assert not first.exists(), "the stale plan must be removed"
    index = json.loads((second.parent / INDEX_FILE).read_text())
    assert [e["file"] for e in index.values()] == [second.name]
    third = ensure_engine(bundle, "global", "int8", dataclasses.replace(ORIN, gpu_name="Thor", compute_capability="11.0"),
                          build).plan
    assert len(build.calls) == 3 and not second.exists() and third.exists()
    nano = ensure_engine(bundle, "global", "int8", dataclasses.replace(ORIN, device_model="Jetson Orin Nano"),
                         build).plan
    assert len(build.calls) == 4 and not third.exists() and nano.exists()
    # other graphs and precisions live side by side
    parts = ensure_engine(bundle, "parts", "fp16", ORIN, build).plan
    assert nano.exists() and parts.exists() and build.calls[-1] == (names.model_file("parts"), "fp16")


def test_plan_built_before_the_recipe_fix_is_rebuilt(bundle):
    """An index entry written by the old code (key without board and recipe: TF32 on, FP16 in 8.x int8)
    is stale for the current recipe: removed and rebuilt, never reused."""
    engine_dir = bundle.root / names.ENGINE_DIR
    engine_dir.mkdir()
    onnx_name = names.model_file("global", "int8", "trt")
    old_key = {"onnx_sha256": sha256_file(bundle.root / onnx_name), "trt_version": "8.5.2", "gpu_name": "Orin",
               "compute_capability": "8.7", "precision": "int8"}
    old_plan = engine_dir / "global.int8.0123456789abcdef.plan"
    old_plan.write_bytes(b"PLAN built with INT8+FP16 and TF32")
    write_index(engine_dir, {"f" * 64: {"file": old_plan.name, "plan_sha256": sha256_file(old_plan),
                                         "onnx": onnx_name, "graph": "global", "key": old_key}})
    build = FakeBuilder()
    res = ensure_engine(bundle, "global", "int8", dataclasses.replace(ORIN, trt_version="8.5.2"), build)
    assert len(build.calls) == 1 and not old_plan.exists() and res.plan.exists()


def test_corrupt_plan_or_changed_onnx_rebuilds(bundle):
    build = FakeBuilder()
    plan = ensure_engine(bundle, "parts", "fp32", ORIN, build).plan
    plan.write_bytes(b"truncated")
    assert ensure_engine(bundle, "parts", "fp32", ORIN, build).plan == plan and len(build.calls) == 2
    assert plan.read_bytes().startswith(b"PLAN ")
    (plan.parent / INDEX_FILE).write_text("{not json")
    ensure_engine(bundle, "parts", "fp32", ORIN, build)
    assert len(build.calls) == 3  # unreadable index: rebuilt, never a crash
    onnx_path = bundle.root / names.model_file("parts")
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")  # a new ONNX file means a new key
    new = ensure_engine(bundle, "parts", "fp32", ORIN, build).plan
    assert new != plan and not plan.exists() and len(build.calls) == 4


def test_failed_or_raising_verification_removes_plan(bundle):
    build = FakeBuilder()
    plans = lambda: list((bundle.root / names.ENGINE_DIR).glob("*.plan"))  # noqa: E731
    seen = []

    def verify(plan, onnx_path):
        seen.append((plan.name, onnx_path.name))
        return {"passed": False, "reason": "class agreement 3/4", "max_prob_error": 0.4, "classes": "3/4"}

    with pytest.raises(BackendError, match=r"engine global fp32: .* -> FAIL: class agreement 3/4 \(plan deleted\)"):
        ensure_engine(bundle, "global", "fp32", ORIN, build, verify)
    assert seen and not plans()

    def broken(plan, onnx_path):
        raise BackendError("CUDA cudaMemcpyAsync (to device) failed: cudaErrorInvalidValue (1)")

    with pytest.raises(BackendError, match="cudaMemcpyAsync"):
        ensure_engine(bundle, "global", "fp32", ORIN, build, broken)
    assert not plans(), "a plan whose check raised must not stay behind"
    ok = ensure_engine(bundle, "global", "fp32", ORIN, build, lambda p, o: {"passed": True, "max_prob_error": 0.0,
                                                                            "classes": "1/1"})
    entry = json.loads((ok.plan.parent / INDEX_FILE).read_text())
    assert list(entry.values())[0]["verify"]["passed"] is True


def test_int8_engine_needs_int8_file(tmp_path):
    b = load_bundle(make_fake_bundle(tmp_path / "fp32only"))
    with pytest.raises(BundleError, match="--int8"):
        ensure_engine(b, "global", "int8", ORIN, FakeBuilder())


# -------------------------------------------------------------------------------- the engine check


def _global_out(logits=(2.0, -1.0), heat=0.5, shift=0.0):
    heatmap = np.full((1, 1, 8, 8), heat, np.float32)
    boxes = np.array([[[0.0, 0.0, 0.25, 0.25], [0.5, 0.5, 0.75, 0.75]]], np.float32) + np.float32(shift)
    return {names.GLOBAL_LOGITS: np.array([logits], np.float32), names.HEATMAP: heatmap, names.BOXES: boxes}


def test_compare_outputs_gates_every_output():
    ref = [_global_out()]
    ok = engine_check.compare_outputs([_global_out(logits=(2.0 + 1e-5, -1.0))], ref, "fp32")
    assert ok["passed"] and ok["classes"] == "1/1" and ok["boxes"] == "1/1" and ok["box_rule"] == "equal"
    flipped = engine_check.compare_outputs([_global_out(logits=(-1.0, 2.0))], ref, "int8")
    assert not flipped["passed"] and "class agreement 0/1" in flipped["reason"]
    # int8: a box may move by one heatmap cell (1/8 here), not more; fp32/fp16: boxes equal
    one_cell = [_global_out(shift=1 / 8)]
    assert engine_check.compare_outputs(one_cell, ref, "int8")["passed"]
    for precision in ("fp32", "fp16"):
        res = engine_check.compare_outputs(one_cell, ref, precision)
        assert not res["passed"] and "boxes equal on 0/1" in res["reason"]
    two_cells = engine_check.compare_outputs([_global_out(shift=2.5 / 8)], ref, "int8")
    assert not two_cells["passed"] and "boxes within one cell on 0/1" in two_cells["reason"]
    # the heatmap is gated at every precision (int8 too), the probabilities as well
    hot = engine_check.compare_outputs([_global_out(heat=0.6)], ref, "int8")
    assert not hot["passed"] and "heatmap error 0.1" in hot["reason"]
    shifted = engine_check.compare_outputs([_global_out(logits=(0.5, 0.4))], ref, "int8")
    assert not shifted["passed"] and "probability error" in shifted["reason"] and shifted["classes"] == "1/1"
    # a class flip on a reference tie within the probability tolerance is a tie, not a disagreement
    tie_ref = [_global_out(logits=(0.0, 1e-4))]
    tie = engine_check.compare_outputs([_global_out(logits=(1e-4, 0.0))], tie_ref, "fp32")
    assert tie["passed"] and tie["class_ties"] == 1
    assert "classes 1/1 (1 tie)" in engine_check.check_line("global", "fp32", ORIN, tie)
    nan = _global_out()
    nan[names.HEATMAP][0, 0, 0, 0] = np.nan
    assert not engine_check.compare_outputs([nan], ref, "int8")["passed"]
    assert not engine_check.compare_outputs([{names.GLOBAL_LOGITS: ref[0][names.GLOBAL_LOGITS]}], ref, "fp32")["passed"]


def test_check_line_is_one_pasteable_line():
    report = engine_check.compare_outputs([_global_out()], [_global_out()], "int8")
    device = DeviceInfo("10.3.0", "Orin", "8.7", "NVIDIA Jetson AGX Orin Developer Kit")
    line = engine_check.check_line("global", "int8", device, report)
    assert line == ("engine global int8: TensorRT 10.3.0, Jetson AGX Orin Developer Kit (sm 8.7), max |dp| 0, "
                    "classes 1/1, boxes 1/1 (<=1 cell), heatmap 0 -> PASS")


def test_int8_reference_is_the_qdq_simulation(tmp_path, monkeypatch):
    """int8 engines are checked against the Q/DQ simulation (graph optimisations off), the reference export
    scores the TensorRT flavour with -- not onnxruntime's fused int8 kernels."""
    import calibration.accuracy as accuracy

    seen = []
    real = accuracy.make_session

    def spy(path, threads=0, simulate_qdq=False):
        seen.append((Path(path).name, simulate_qdq))
        return real(path, threads, simulate_qdq)

    monkeypatch.setattr(accuracy, "make_session", spy)
    root = make_fake_bundle(tmp_path / "b", int8=True)
    feeds = [{names.PARTS_INPUT: np.zeros((4, 3, 32, 32), np.float32)}]
    engine_check.reference_outputs(root / "parts.int8.trt.onnx", "int8", feeds)
    engine_check.reference_outputs(root / "parts.onnx", "fp32", feeds)
    assert seen == [("parts.int8.trt.onnx", True), ("parts.onnx", False)]


# --------------------------------------------------------- TensorRT end to end against the fakes


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
@pytest.mark.parametrize("precision", ["int8", "fp16", "fp32"])
def test_build_run_verify_end_to_end(tmp_path, monkeypatch, gpu, version, precision):
    root = add_samples(make_fake_bundle(tmp_path / "b", int8=True))
    trt = use_tensorrt(monkeypatch, gpu, version)
    lines = []
    results = engine.ensure_engines(root, precision, log=lines.append)
    built = trt.last_build
    # the builder flags each recipe sets (TF32 is cleared at every precision; INT8 on 8.x without FP16;
    # TensorRT 10 builds INT8 strongly typed, from the Q/DQ nodes, with no precision flag; fp16 pins the
    # heatmap tail to FP32 and makes the builder obey it)
    int8_8x = version.startswith("8.")
    expected = {"int8": ["INT8"] if int8_8x else [], "fp16": ["FP16", "OBEY_PRECISION_CONSTRAINTS"],
                "fp32": []}[precision]
    assert built["flags"] == expected
    assert built["strongly_typed"] == (precision == "int8" and not int8_8x)
    assert built["workspace"] == 1 << 30
    if precision != "fp16":
        assert built["fp32_layers"] == []
    g, p = results["global"], results["parts"]
    assert g.entry["verify"]["passed"] and p.entry["verify"]["passed"]
    assert g.line.startswith(f"engine global {precision}: TensorRT {version}, Orin (sm 8.7), max |dp| ")
    assert g.line.endswith("-> PASS") and "classes 3/3" in g.line and "boxes 3/3" in g.line and "heatmap" in g.line
    assert "classes 12/12" in p.line and "boxes" not in p.line
    assert any("via cuda-python" in ln for ln in lines)
    assert gpu.pageable_copies == 0 and gpu.async_copies > 0  # host buffers are page-locked
    again = engine.ensure_engines(root, precision)
    assert again["global"].cached and again["global"].plan == g.plan and again["global"].line.endswith("(cached)")


def test_fp32_engine_with_tf32_left_on_is_not_what_is_built(tmp_path, monkeypatch, gpu):
    """Old build_plan left TF32 (on by default) set for fp32: the fake then rounds Conv/MatMul outputs to
    a 10-bit mantissa, as Orin's TF32 does. The recipe clears it, so the fp32 check is exact."""
    root = add_samples(make_fake_bundle(tmp_path / "b"), 3)
    trt = use_tensorrt(monkeypatch, gpu)
    res = engine.ensure_engines(root, "fp32")
    assert "TF32" not in trt.last_build["flags"]
    assert res["global"].entry["verify"]["max_prob_error"] == 0.0


def test_pycuda_only_jetson_runs_the_check(tmp_path, monkeypatch):
    """cuda-python 13 on a JetPack 6 driver: imports, every call fails; pycuda takes over, and its
    context is popped at the end."""
    g = FakeGpu(driver=12060, runtime=13000)
    install(monkeypatch, g)
    root = add_samples(make_fake_bundle(tmp_path / "b", int8=True))
    use_tensorrt(monkeypatch, g, "10.3.0")
    lines = []
    res = engine.ensure_engines(root, "int8", log=lines.append)
    assert res["global"].line.endswith("-> PASS")
    assert any("cuda-python" in ln and "cudaErrorInsufficientDriver" in ln for ln in lines)
    assert any("via pycuda" in ln for ln in lines)
    assert g.pageable_copies == 0
    g.assert_clean()


@pytest.mark.parametrize("fault, match", [
    ("cudaMalloc", "cudaMalloc failed: cudaErrorMemoryAllocation"),
    ("cudaMallocHost", "cudaMallocHost failed"),
    ("cudaMemcpyAsync", "cudaMemcpyAsync .* failed"),
    ("cudaStreamCreate", "cudaStreamCreate failed"),
    ("cudaStreamSynchronize", "cudaStreamSynchronize failed"),
    ("deserialize", "cannot load this engine"),
    ("context", "cannot create an execution context"),
    ("set_tensor_address", "refused the device address"),
    ("execute", "execute_async_v3 failed"),
])
def test_every_cuda_and_tensorrt_failure_in_the_check_is_one_line_and_leaves_nothing(
        tmp_path, monkeypatch, gpu, fault, match):
    root = add_samples(make_fake_bundle(tmp_path / "b", int8=True))
    use_tensorrt(monkeypatch, gpu)
    gpu.fail[fault] = 2 if fault == "cudaMalloc" else 1
    gpu.calls.clear()
    from export.cli import main

    res = CliRunner().invoke(main, [str(root), "--engine", "--precision", "int8"])
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and isinstance(res.exception, SystemExit)
    import re
    assert re.search(match, errors[0]), errors[0]
    assert not list((root / names.ENGINE_DIR).glob("*.plan")), "no stray .plan"
    # gpu fixture: no leaked buffers, streams or pushed contexts


@pytest.mark.parametrize("fault, version, precision, match", [
    ("parse", "10.3.0", "int8", "cannot parse it: In node 3 .*FancyOp Assertion failed"),
    ("build", "10.3.0", "int8", "failed to build a int8 engine"),
    (None, "11.1.0", "fp16", "TensorRT 11.1.0 has no FP16 builder flag; use --precision int8"),
])
def test_build_failures_are_one_line(tmp_path, monkeypatch, gpu, fault, version, precision, match):
    root = add_samples(make_fake_bundle(tmp_path / "b", int8=True))
    use_tensorrt(monkeypatch, gpu, version)
    if fault:
        gpu.fail[fault] = 0
    from export.cli import main

    res = CliRunner().invoke(main, [str(root), "--engine", "--precision", precision])
    lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    import re
    assert re.search(match, lines[0]), lines[0]
    assert not list((root / names.ENGINE_DIR).glob("*.plan"))


def test_fake_tensorrt_refuses_what_the_real_one_refuses(monkeypatch, gpu, tmp_path):
    """The fake is strict where TensorRT is: enums, not ints; 8.x networks need EXPLICIT_BATCH; a strongly
    typed network takes no precision flag; 10 has no binding-index API; plans are tied to version and GPU."""
    trt8 = make_tensorrt(gpu, "8.5.2")
    trt10 = make_tensorrt(gpu, "10.3.0")
    onnx_bytes = (make_fake_bundle(tmp_path / "b") / "parts.onnx").read_bytes()
    logger = trt8.Logger(trt8.Logger.WARNING)
    net = trt8.Builder(logger).create_network(0)
    parser = trt8.OnnxParser(net, logger)
    assert not parser.parse(onnx_bytes) and "explicit batch" in parser.get_error(0).desc()
    config = trt10.Builder(trt10.Logger(trt10.Logger.WARNING)).create_builder_config()
    assert config.get_flag(trt10.BuilderFlag.TF32)  # on by default
    with pytest.raises(TypeError):
        config.set_flag(6)
    assert trt10.TensorIOMode.INPUT != 1 and trt10.TensorIOMode.INPUT != "in"
    builder = trt10.Builder(trt10.Logger(trt10.Logger.WARNING))
    strong = builder.create_network(1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt10.OnnxParser(strong, builder.logger).parse(onnx_bytes)
    cfg = builder.create_builder_config()
    cfg.set_flag(trt10.BuilderFlag.FP16)
    assert builder.build_serialized_network(strong, cfg) is None
    cfg.clear_flag(trt10.BuilderFlag.FP16)
    plan = builder.build_serialized_network(strong, cfg)
    assert plan is not None and bytes(plan)
    gpu.runtime_context = True
    engine10 = trt10.Runtime(trt10.Logger(trt10.Logger.WARNING)).deserialize_cuda_engine(bytes(plan))
    assert not hasattr(engine10, "get_binding_index") and isinstance(engine10.get_tensor_shape("crops"), trt10.Dims)
    assert trt8.Runtime(logger).deserialize_cuda_engine(bytes(plan)) is None  # another TensorRT version


def test_missing_tensorrt_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as on a machine without it
    with pytest.raises(BackendError, match="python3-libnvinfer"):
        engine.build_plan(tmp_path / "x.onnx", build_recipe("fp32", "10.3.0"))
    root = make_fake_bundle(tmp_path / "b", int8=True)
    from export.cli import main

    res = CliRunner().invoke(main, [str(root), "--engine"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "python3-libnvinfer" in lines[0] and isinstance(res.exception, SystemExit)
    assert not (root / names.ENGINE_DIR).exists()


def test_cli_prints_one_verification_line_per_engine(tmp_path, monkeypatch, gpu):
    root = add_samples(make_fake_bundle(tmp_path / "b", int8=True))
    use_tensorrt(monkeypatch, gpu, "8.5.2")
    monkeypatch.setattr(device_info, "jetson_board",
                        lambda root="/": ("NVIDIA Jetson AGX Orin Developer Kit", "nvidia,p3701-0005"))
    from export.cli import main

    res = CliRunner().invoke(main, [str(root), "--engine", "--precision", "int8"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("engine ")]
    assert [ln.split(":")[0] for ln in lines] == ["engine global int8", "engine parts int8"]
    assert lines[0].startswith("engine global int8: TensorRT 8.5.2, Jetson AGX Orin Developer Kit (sm 8.7), max |dp| ")
    assert lines[0].endswith("heatmap 0 -> PASS") and "classes 3/3, boxes 3/3 (<=1 cell)" in lines[0]
    as_json = CliRunner().invoke(main, [str(root), "--engine", "--precision", "int8", "--json"])
    out = as_json.stdout  # click < 8.2 mixes stderr (log, engine lines) in: the JSON is printed last
    doc = json.loads(out[out.index("\n{") + 1:] if not out.startswith("{") else out)
    assert doc["engines"]["global"]["cached"] and doc["engines"]["global"]["verify"]["passed"]


def test_engine_path_needs_no_torch(tmp_path):
    """On the Jetson only the bundle, onnxruntime, TensorRT and a CUDA binding exist: `mgfen-export BUNDLE
    --engine` builds, checks and prints its lines with torch unimportable (fakes for TensorRT and CUDA)."""
    import subprocess
    import textwrap

    root = add_samples(make_fake_bundle(tmp_path / "b", int8=True))
    tests = Path(__file__).resolve().parent
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None      # any torch import now fails
        sys.path.insert(0, {str(tests)!r})
        from fake_cuda import FakeGpu, cuda_python_modules
        from fake_tensorrt import make_tensorrt
        gpu = FakeGpu()
        sys.modules.update(cuda_python_modules(gpu))
        sys.modules["tensorrt"] = make_tensorrt(gpu, "10.3.0")
        from click.testing import CliRunner
        from export.cli import main
        res = CliRunner().invoke(main, [{str(root)!r}, "--engine"])
        leaked = sorted(m for m, v in sys.modules.items()
                        if v is not None and m.split(".")[0] in ("torch", "torchvision", "train"))
        print(res.exit_code, leaked, res.output.strip())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 [] "), out.stdout
    assert "engine global int8: TensorRT 10.3.0" in out.stdout and "-> PASS" in out.stdout


def test_first_hour_bench_all_backends_and_precisions(tmp_path, monkeypatch, gpu):
    """The first-hour command (docs/jetson_first_hour.md), `mgfen-bench --backend all --precision all`, after
    building int8 engines: onnxruntime rows, the native TensorRT int8 row, and one-line reasons for the rest."""
    from edge_runtime.cli.bench_cli import main as bench_main
    from export.cli import main as export_main

    root = add_samples(make_fake_bundle(tmp_path / "b", int8=True))
    use_tensorrt(monkeypatch, gpu, "10.3.0")
    assert CliRunner().invoke(export_main, [str(root), "--engine", "--precision", "int8"]).exit_code == 0
    res = CliRunner().invoke(bench_main, ["--bundle", str(root), "--backend", "all", "--precision", "all",
                                          "--frames", "2", "--warmup", "1", "--json", str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    rows = {(r["backend"], r["precision"]): r for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert rows[("trt", "int8")]["status"] == "ran" and rows[("trt", "int8")]["engines"][0].startswith("trt:global.int8.")
    assert rows[("ort", "int8")]["status"] == "ran" and rows[("ort", "fp32")]["status"] == "ran"
    assert "no TensorRT engine for global at fp16" in rows[("trt", "fp16")]["reason"]
    assert "--engine --precision fp16" in rows[("trt", "fp16")]["reason"]
    assert gpu.pageable_copies == 0
