"""The Jetson path's second review (issue 20): what would fail on JetPack 5 and 6 and is testable here --
TensorRT 8.5.2's broken trt.nptype, opset limits per TensorRT major, the first-hour CUDA line under pycuda,
the Jetson extras' pins, onnxruntime vs onnxruntime-gpu, the onnxruntime TensorRT provider at int8,
`--engine --out`, the fp16 recipe's FP32 tail and an int8 fake that does not compute like the check's
reference. What only a device can tell is listed in docs/jetson.md ("First hour")."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement

from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle, write_manifest
from edge_runtime.errors import BackendError
from edge_runtime.inference import backends, device_info, trt_buffers
from edge_runtime.inference.backends import TrtBackend, open_backend, ort_provider_list
from edge_runtime.inference.engine_cache import DeviceInfo, build_recipe, max_opset
from export import engine
from export.engine import ensure_engine
from fake_bundle import make_fake_bundle
from fake_tensorrt import make_tensorrt

ROOT = Path(__file__).resolve().parents[1]
ORIN85 = DeviceInfo("8.5.2", "Orin", "8.7")


def _plan(tmp_path: Path, gpu, version: str, graph: str = "parts", precision: str = "fp32") -> Path:
    root = make_fake_bundle(tmp_path / "src")
    gpu.runtime_context = True
    plan = tmp_path / f"{graph}.{precision}.plan"
    plan.write_bytes(engine.build_plan(root / f"{graph}.onnx", build_recipe(precision, version)))
    gpu.runtime_context = False
    return plan


# ---------------------------------------------------------------------- 1. trt.nptype on TensorRT 8.5.2


def test_tensorrt_85_nptype_raises_and_the_backend_does_not_use_it(tmp_path, monkeypatch, gpu):
    """TensorRT 8.5.x (JetPack 5: 8.5.2) builds nptype's table with np.bool, removed in numpy 1.24: every
    call raises AttributeError (not a BackendError). The backend maps DataType members itself."""
    trt = make_tensorrt(gpu, "8.5.2")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    with pytest.raises(AttributeError, match="np.bool"):
        trt.nptype(trt.DataType.FLOAT)
    plan = _plan(tmp_path, gpu, "8.5.2")
    with TrtBackend(plan, "pycuda") as be:
        x = np.full(be.input_shapes[names.PARTS_INPUT], 0.25, np.float32)
        assert be.infer({names.PARTS_INPUT: x})[names.PART_LOGITS].shape == (4, 2)
    assert backends.trt_dtype(trt, trt.DataType.HALF) == np.float16
    assert backends.trt_dtype(trt, trt.DataType.BOOL) == np.bool_
    trt10 = make_tensorrt(gpu, "10.3.0")
    assert backends.trt_dtype(trt10, trt10.DataType.INT64) == np.int64
    with pytest.raises(BackendError, match="BF16 has no numpy equivalent"):
        backends.trt_dtype(trt10, trt10.DataType.BF16)


# ------------------------------------------------------------------- 2. opset limits per TensorRT major


def _with_opset(root: Path, opset: int) -> Path:
    """Rewrite the bundle's int8 TensorRT global file to claim `opset` (manifest sha256 updated)."""
    path = root / names.model_file("global", "int8", "trt")
    model = onnx.load(str(path))
    model.opset_import[0].version = opset
    onnx.save(model, str(path))
    write_manifest(root, load_bundle(root, verify=False).manifest)
    return root


@pytest.mark.parametrize("version, limit", [("8.5.2", 17), ("8.6.2", 17), ("10.3.0", 20), ("11.1.0", 25),
                                            ("12.0.0", None)])
def test_max_opset_per_tensorrt_major(version, limit):
    assert max_opset(version) == limit


def test_opset_18_is_refused_on_tensorrt_8_before_anything_is_touched(tmp_path):
    from test_engine import FakeBuilder

    bundle = load_bundle(_with_opset(make_fake_bundle(tmp_path / "b", int8=True), 18))
    build = FakeBuilder()
    # a plan cached for TensorRT 10 stays: the refusal comes before stale plans are removed
    kept = ensure_engine(bundle, "global", "int8", DeviceInfo("10.3.0", "Orin", "8.7"), build).plan
    with pytest.raises(BackendError) as err:
        ensure_engine(bundle, "global", "int8", ORIN85, build)
    line = str(err.value)
    assert line == ("global.int8.trt.onnx: ONNX opset 18 is newer than TensorRT 8.5.2 parses (<= 17; from opset "
                    "18 ReduceMean takes its axes as an input, which it ignores); re-export the bundle with "
                    "--opset 17")
    assert len(build.calls) == 1 and kept.exists()


def test_opset_refusal_is_one_cli_line(tmp_path, monkeypatch, gpu):
    from export.cli import main
    from test_engine import add_samples

    root = _with_opset(add_samples(make_fake_bundle(tmp_path / "b", int8=True)), 18)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(gpu, "8.6.2"))
    res = CliRunner().invoke(main, [str(root), "--engine", "--precision", "int8"])
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert res.exit_code == 1 and len(errors) == 1 and "Traceback" not in res.output, res.output
    assert "opset 18 is newer than TensorRT 8.6.2 parses (<= 17" in errors[0]
    assert not list((root / names.ENGINE_DIR).glob("*.plan"))


# ------------------------------------------------------------- 3. the first-hour CUDA line under pycuda


def _cuda_one_liners() -> list[str]:
    """The `python -c "..."` lines of README.md and docs/ that load a CUDA binding."""
    found = []
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = doc.read_text() if doc.is_file() else ""
        for code in re.findall(r'python -c "([^"]*trt_buffers[^"]*)"', text):
            found.append(re.sub(r"\s*\n\s*", " ", code))
    return found


def test_first_hour_cuda_line_exits_0_under_pycuda():
    """With pycuda as the binding (cuda-python absent), a line that leaves pycuda's context pushed makes
    the interpreter abort at exit (exit 134) after printing. Every such line in the docs must exit 0."""
    lines = _cuda_one_liners()
    assert lines, "no first-hour CUDA line found in README.md or docs/"
    prelude = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests')!r})
        from fake_cuda import FakeGpu, pycuda_modules
        sys.modules.update(pycuda_modules(FakeGpu(), abort_at_exit=True))
        for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
            sys.modules[name] = None      # no cuda-python: pycuda is the binding
    """)
    def run(line: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", prelude + line], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)

    old = run("from edge_runtime.inference.trt_buffers import load_cuda; c = load_cuda(); print(c.name, c.device(), "
              "c.skipped)")  # the line README had: the fake aborts as pycuda does
    assert old.returncode == -6 and "context stack was not empty" in old.stderr  # SIGABRT: exit 134 in a shell
    for line in lines:
        out = run(line)
        assert out.returncode == 0, (line, out.stderr)
        assert out.stdout.strip() == "pycuda ('Orin', (8, 7)) ['cuda-python: not installed (cuda)']", out.stdout


def test_describe_cuda_pops_pycudas_context_even_when_it_fails(monkeypatch, gpu):
    from fake_cuda import install

    install(monkeypatch, gpu, cuda_python=False)
    assert trt_buffers.describe_cuda() == "pycuda ('Orin', (8, 7)) ['cuda-python: not installed (cuda)']"
    assert not gpu.ctx_stack

    def broken(self):
        raise BackendError("CUDA device query failed")

    monkeypatch.setattr(trt_buffers.PyCudaApi, "device", broken)
    with pytest.raises(BackendError, match="device query"):
        trt_buffers.describe_cuda("pycuda")
    assert not gpu.ctx_stack  # popped: no abort at exit


def test_pycuda_install_hint_puts_nvcc_on_path(monkeypatch):
    from fake_cuda import FakeGpu, install

    install(monkeypatch, FakeGpu(), cuda_python=False, pycuda=False)
    with pytest.raises(BackendError) as err:
        trt_buffers.load_cuda()
    assert "`PATH=/usr/local/cuda/bin:$PATH pip install pycuda`" in str(err.value)


# ------------------------------------------------------------------------------- 4. onnxruntime installs


def test_onnxruntime_note_on_a_jetson(monkeypatch, tmp_path):
    from importlib import metadata

    installed = {"onnxruntime"}

    def version(dist):
        if dist not in installed:
            raise metadata.PackageNotFoundError(dist)
        return "1.16.3"

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    bundle = load_bundle(make_fake_bundle(tmp_path / "b", int8=True))
    monkeypatch.setattr(device_info, "jetson_board", lambda root="/": ("", ""))
    assert device_info.ort_install_note([backends.CPU_EP]) == ""
    monkeypatch.setattr(device_info, "jetson_board", lambda root="/": ("Raspberry Pi 4 Model B Rev 1.4", ""))
    assert device_info.ort_install_note([backends.CPU_EP]) == ""
    monkeypatch.setattr(device_info, "jetson_board",
                        lambda root="/": ("NVIDIA Jetson Orin Nano Developer Kit", "nvidia,p3767-0005"))
    with open_backend(bundle, "global", "ort", "int8") as be:
        assert be.why.endswith("; this onnxruntime has no CUDA or TensorRT provider (the CPU wheel): on a Jetson "
                               "replace it with NVIDIA's onnxruntime-gpu wheel (docs/jetson.md)"), be.why
    assert device_info.ort_install_note([backends.TRT_EP, backends.CUDA_EP, backends.CPU_EP]) == ""
    installed.add("onnxruntime-gpu")
    assert "both installed" in device_info.ort_install_note([backends.TRT_EP, backends.CPU_EP])


# ------------------------------------------------------------------------- 6, 10. the Jetson extras' pins


def _extra(name: str, python: str) -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = {}
    for line in cfg["options.extras_require"][name].strip().splitlines():
        req = Requirement(line.strip())
        if req.marker is None or req.marker.evaluate({"python_version": python}):
            reqs[req.name] = req.specifier
    return reqs


@pytest.mark.parametrize("extra, python", [("jetson5", "3.8"), ("jetson6", "3.10"), ("jetson", "3.8"),
                                           ("jetson", "3.10")])
def test_jetson_extras_keep_numpy_1_and_a_cuda_python_for_jetpacks_driver(extra, python):
    reqs = _extra(extra, python)
    assert "2.0.0" not in reqs["numpy"] and "1.24.4" in reqs["numpy"] and "1.26.4" in reqs["numpy"]
    assert "4.12.0.88" not in reqs["opencv-python-headless"] and "4.11.0.86" in reqs["opencv-python-headless"]
    cuda = reqs["cuda-python"]
    if python == "3.8":  # JetPack 5
        assert "11.8.2" in cuda and "11.8.3" not in cuda and "12.0.0" not in cuda
    else:  # JetPack 6: 12.6.x (CUDA 12.6), never 12.8/12.9 (newer drivers, server Arm) nor 13 (580+ driver)
        assert "12.6.2" in cuda and "12.8.0" not in cuda and "12.9.0" not in cuda and "13.0.0" not in cuda


def test_x86_install_is_unchanged():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    reqs = {Requirement(ln.strip()).name: Requirement(ln.strip()).specifier
            for ln in cfg["options"]["install_requires"].strip().splitlines()}
    assert "2.2.0" in reqs["numpy"] and "4.12.0.88" in reqs["opencv-python-headless"]


# ------------------------------------------------------------- 8. onnxruntime's TensorRT provider at int8


def test_ort_tensorrt_provider_at_int8_has_no_fp16():
    """int8 runs the QDQ file as export scored it: FP16 would let the layers Q/DQ leaves float (the stem,
    the heatmap and box tail) run in half precision (as build_recipe for TensorRT 8.x)."""
    opts = ort_provider_list("trt", "int8", None)[0][1]
    assert opts == {"trt_fp16_enable": False, "trt_int8_enable": True}
    assert ort_provider_list("trt", "fp16", None)[0][1] == {"trt_fp16_enable": True, "trt_int8_enable": False}


# ------------------------------------------------------------------------------ 11. --engine with --out


def test_engine_with_out_is_refused_and_builds_nothing(tmp_path):
    from export.cli import main

    root = make_fake_bundle(tmp_path / "b", int8=True)
    other = tmp_path / "elsewhere"
    res = CliRunner().invoke(main, [str(root), "--engine", "--out", str(other)])
    assert res.exit_code == 2, res.output
    assert "--out is for exporting a checkpoint" in res.output and f"drop --out {other}" in res.output
    assert not other.exists() and not (root / names.ENGINE_DIR).exists()


# ------------------------------------------------------------------ 7. fp16: heatmap and box tail in FP32


@pytest.mark.parametrize("version", ["8.5.2", "10.3.0"])
def test_fp16_engine_keeps_the_heatmap_tail_fp32(tmp_path, monkeypatch, gpu, version):
    """The fp16 recipe pins the heatmap's layer and everything computed from it to FP32 (obeyed): in the
    engine the box scores are the exact FP32 mean of the engine's own heatmap, and the heatmap is off the
    float16 grid, while the logits (MatMul, not in the tail) are FP16-rounded."""
    trt = make_tensorrt(gpu, version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = _plan(tmp_path, gpu, version, "global", "fp16")
    assert "OBEY_PRECISION_CONSTRAINTS" in trt.last_build["flags"]
    assert trt.last_build["fp32_layers"] == sorted([names.HEATMAP, "heat_mean", names.BOX_SCORES])
    rng = np.random.default_rng(0)
    with TrtBackend(plan, "cuda-python") as be:
        x = rng.uniform(0.2, 0.9, be.input_shapes[names.GLOBAL_INPUT]).astype(np.float32)
        out = be.infer({names.GLOBAL_INPUT: x})
    heat, scores, logits = out[names.HEATMAP], out[names.BOX_SCORES], out[names.GLOBAL_LOGITS]
    np.testing.assert_allclose(scores, np.full(scores.shape, heat.mean(dtype=np.float32)), rtol=0, atol=1e-7)
    assert (heat.astype(np.float16).astype(np.float32) != heat).any(), "heatmap computed in FP16"
    assert (logits.astype(np.float16).astype(np.float32) == logits).all(), "FP16 is not on elsewhere"


# ------------------------------------------------ 12. the int8 check fails when it should, passes when not


def _faint_samples(root: Path, strength: int = 8) -> Path:
    """Calibration frames with a faint colour cast: probabilities well inside (0, 1), where int8 error
    shows (a strong cast saturates the fake model's softmax and hides any error)."""
    import dataclasses

    import cv2

    from edge_runtime.bundle.manifest import sha256_file
    from fake_bundle import make_image

    b = load_bundle(root)
    (root / "calibration").mkdir(exist_ok=True)
    size, samples = b.manifest.preprocess.frame_size, {}
    for i, colour in enumerate(["red", "blue", "red", "blue"]):
        path = root / "calibration" / f"sample{i}.png"
        cv2.imwrite(str(path), make_image(colour, size, size, seed=i, strength=strength))
        samples[f"calibration/{path.name}"] = sha256_file(path)
    write_manifest(root, dataclasses.replace(b.manifest, calibration={"samples": samples}))
    return root


@pytest.mark.parametrize("bits, passes", [(8, True), (3, False)])
def test_int8_check_sees_the_fake_int8_kernels(tmp_path, monkeypatch, gpu, bits, passes):
    """The fake's int8 engines run MatMul as int8 kernels (per-tensor quantised, integer accumulation,
    requantised), not the Q/DQ simulation the check uses as reference: at 8 bits the check reports a
    non-zero probability error within its gate and passes; with a planted 3-bit kernel it fails and
    deletes the plan."""
    root = _faint_samples(make_fake_bundle(tmp_path / "b", int8=True))
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(gpu, "10.3.0"))
    gpu.int8_bits = bits
    if passes:
        res = engine.ensure_engines(root, "int8")
        for graph in names.GRAPHS:
            report = res[graph].entry["verify"]
            assert report["passed"] and 1e-4 < report["max_prob_error"] <= 5e-2, report
        return
    with pytest.raises(BackendError, match=r"engine global int8: .*-> FAIL: probability error .*\(plan deleted\)"):
        engine.ensure_engines(root, "int8")
    assert not list((root / names.ENGINE_DIR).glob("*.plan"))
