"""Bad input at the level a user meets it: the CLIs (mgfen-data, mgfen-train, mgfen-eval, mgfen-export,
mgfen-scan, mgfen-bench) called through click's CliRunner on their `main` objects.

Every case checks the same contract: a non-zero exit with ONE line naming the problem and no traceback,
or (the scanner) an error event while the scan goes on; and nothing recorded before is lost: the
events file, the audit database, an existing bundle folder or run folder. Library-level checks of the
same inputs live in test_preprocess, test_manifest, test_sources, test_backends, test_engine,
test_calibration, test_train and test_eval; this file is the one place that walks the whole list
(issue 8), and the bad-input table of docs/bad_input.md points at its tests.

Tiny data only: the fake bundle (tests/fake_bundle.py), a 20-frame 128 px train.data.synth dataset and an
untrained resnet18 checkpoint at 128 px.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sqlite3
import struct
import sys
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle, sha256_file, write_manifest
from edge_runtime.cli.bench_cli import main as bench_main
from edge_runtime.cli.scan_cli import main as scan_main
from edge_runtime.inference import trt_buffers
from edge_runtime.inference.engine_cache import DeviceInfo, cache_key, onnx_for, plan_name, write_index
from fake_bundle import make_fake_bundle, make_image

HUGE = 12_000  # side of the 144 Mpx frame (below MAX_PIXELS: it must be read, in bounded memory)


# ------------------------------------------------------------------------------------------ helpers


def invoke(cli, args: list[str]):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, alone: bool = True) -> str:
    """Assert the user saw a clean failure and return the error line: exit != 0, no traceback (an
    unhandled exception shows up as result.exception), exactly one 'Error:' line and it is the last
    line; `alone`: nothing else was printed either (no progress bars in the way)."""
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}: {result.output}"
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    if alone:
        assert lines == errors, result.output
    return errors[0]


def succeeded(result) -> None:
    assert result.exit_code == 0 and (result.exception is None or isinstance(result.exception, SystemExit)), \
        f"{result.exception!r}: {result.output}"


def tree_digest(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (what 'intact' means for a folder)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def audit_rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM verdicts ORDER BY id").fetchall()


def events_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def png_header(width: int, height: int, bit_depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose IHDR declares width x height, with an empty IDAT: a decompression-bomb header."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write(path: Path, data: bytes | np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, np.ndarray):
        assert cv2.imwrite(str(path), data)
    else:
        path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return make_fake_bundle(tmp_path_factory.mktemp("bundle") / "bundle", int8=True)


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    write(folder / "a_red.png", make_image("red", seed=1))
    write(folder / "b_blue.png", make_image("blue", seed=2))
    return folder


@pytest.fixture()
def history(tmp_path, bundle_dir, good_folder):
    """An events file and an audit log that already hold a scan's results (what must not be lost)."""
    events, db = tmp_path / "events.jsonl", tmp_path / "audit.db"
    succeeded(invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", f"file://{good_folder}",
                                 "--out", events, "--audit", db, "--min-frames", "1"]))
    rows = audit_rows(db)
    assert len(rows) == 2 and events.read_text().count("\n") >= 4
    return types.SimpleNamespace(events=events, db=db, text=events.read_text(), rows=rows,
                                 db_bytes=db.read_bytes())


def assert_history_kept(history) -> None:
    assert history.events.read_text().startswith(history.text)
    assert audit_rows(history.db)[: len(history.rows)] == history.rows


def assert_history_untouched(history) -> None:
    assert history.events.read_text() == history.text and history.db.read_bytes() == history.db_bytes


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> Path:
    """A flat reddish 12000 x 12000 JPEG (1.5 MB on disk, 432 MB decoded): genuine under the fake model."""
    frame = np.empty((HUGE, HUGE, 3), np.uint8)
    frame[:] = (60, 90, 200)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
    del frame
    assert ok
    return write(tmp_path_factory.mktemp("huge") / "huge.jpg", buf.tobytes())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The embedded synthetic dataset, as small as it goes: 20 frames of 128 px (splits, masks, manifest)."""
    from train.data.synth import generate_dataset
    from train.data.synth_config import SynthConfig

    root = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(root, SynthConfig(n=20, size=128), workers=1)
    return root


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(a tiny untrained checkpoint, the same weights under another architecture's config)."""
    import torch

    from edge_runtime.preprocess import PreprocessConfig
    from train.model.checkpoint import save_checkpoint
    from train.model.mgfen import ModelConfig, build_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", fpn_channels=16, preprocess=PreprocessConfig(128, 64, 32))
    good = root / "best.pt"
    save_checkpoint(good, build_model(cfg, pretrained=None), list(names.CLASS_NAMES))
    raw = torch.load(good, weights_only=False)
    raw["model_config"]["fpn_channels"] = 32  # resnet18 / FPN-16 weights under an FPN-32 config
    other = root / "other.pt"
    torch.save(raw, other)
    return good, other


def copy_dataset(dataset: Path, dest: Path) -> Path:
    shutil.copytree(dataset, dest)
    return dest


# ------------------------------------------------------------------ image files under the scanner

BAD_FILES = {  # file -> what the error event must say
    "02_corrupt.png": "not a readable image",
    "03_truncated.jpg": "truncated image file",
    "04_empty.png": "empty file (0 bytes)",
    "08_one_pixel.png": "frame 1x1 is too small",
    "10_bomb.png": "frame 20000x20000 is too large",
    "12_giant.bmp": "frame 100000x100000 is too large",  # beyond OpenCV's own limit: was a traceback
}
GOOD_FILES = ("00_red.png", "01_blue.png", "05_gray.png", "06_rgba.png", "07_16bit.png", "09_huge.jpg",
              "13_red.png")
NOT_IMAGES = ("notes.txt", ".DS_Store", "Thumbs.db", "labels.csv")


def bad_files_folder(folder: Path, huge_jpeg: Path) -> Path:
    red, blue = make_image("red", seed=3), make_image("blue", seed=4)
    write(folder / "00_red.png", red)
    write(folder / "01_blue.png", blue)
    rng = np.random.default_rng(0)
    write(folder / "02_corrupt.png", b"\x89PNG\r\n\x1a\n" + rng.bytes(300) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    ok, jpg = cv2.imencode(".jpg", red)
    write(folder / "03_truncated.jpg", jpg.tobytes()[: len(jpg) // 2])
    write(folder / "04_empty.png", b"")
    write(folder / "05_gray.png", cv2.cvtColor(red, cv2.COLOR_BGR2GRAY))
    write(folder / "06_rgba.png", cv2.cvtColor(blue, cv2.COLOR_BGR2BGRA))
    write(folder / "07_16bit.png", red.astype(np.uint16) * 257)
    write(folder / "08_one_pixel.png", np.zeros((1, 1, 3), np.uint8))
    shutil.copyfile(huge_jpeg, folder / "09_huge.jpg")
    write(folder / "10_bomb.png", png_header(20_000, 20_000, 16, 6))  # claims 3.2 GB of 16-bit RGBA
    write(folder / "13_red.png", make_image("red", seed=5))
    write(folder / "12_giant.bmp", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
          + struct.pack("<IiiHHIIiiII", 40, 100_000, 100_000, 1, 24, 0, 0, 0, 0, 0, 0) + bytes(64))
    for name in NOT_IMAGES:
        write(folder / name, b"not an image")
    return folder


def test_scanner_bad_image_files_are_error_events_and_the_scan_goes_on(tmp_path, bundle_dir, huge_jpeg, history):
    """Corrupt, truncated, zero-byte, 1x1 and decompression-bomb files among good ones (grayscale, RGBA,
    16-bit, 12000 x 12000) in a file:// folder, with non-image files beside them. The last good file
    comes after every bad one: the scan went on."""
    folder = bad_files_folder(tmp_path / "frames", huge_jpeg)
    res = invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", f"file://{folder}", "--no-gate",
                             "--out", history.events, "--audit", history.db, "--min-frames", "1"])
    succeeded(res)
    assert_history_kept(history)
    new = events_of(history.events)[len(history.text.splitlines()):]
    errors = [e for e in new if e["type"] == "error"]
    by_file = {Path(e["message"].split(":")[0]).name: e for e in errors}
    assert sorted(by_file) == sorted(BAD_FILES) and len(errors) == len(BAD_FILES)
    for name, words in BAD_FILES.items():
        e = by_file[name]
        assert words in e["message"] and "\n" not in e["message"] and e["where"] == "source", e
    frames = [e for e in new if e["type"] == "frame"]
    assert [Path(e["item"]).name for e in frames] == list(GOOD_FILES)  # non-image files are skipped
    huge = frames[GOOD_FILES.index("09_huge.jpg")]
    assert huge["decision"] == "genuine" and 0 <= min(map(min, huge["boxes"])) <= max(map(max, huge["boxes"])) <= HUGE
    assert [Path(e["item"]).name for e in new if e["type"] == "verdict"] == list(GOOD_FILES)
    assert len(audit_rows(history.db)) == len(history.rows) + len(GOOD_FILES)
    assert f"errors {len(BAD_FILES)}" in res.output
    # Peak memory (process RSS) on the 12000 x 12000 frame and the bomb is measured, not asserted:
    # benchmarks/bench_memory.py (docs/results/bench_memory.md).


# ------------------------------------------------------------------------- a camera that disappears


@pytest.mark.parametrize("uri, extra, problem", [
    ("sim://?fps=100&disconnect_after=4&colour=blue", [], "simulated disconnect"),  # cable pulled
    ("sim://?fps=100&stall_after=4&colour=blue", ["--frame-timeout", "0.2"], "camera stalled"),  # hung driver
], ids=["disconnects", "stalls"])
def test_camera_that_disappears_is_an_error_event_and_the_scan_goes_on(bundle_dir, history, uri, extra, problem):
    res = invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", uri, "--max-frames", "12",
                             "--min-frames", "3", "--session-frames", "3", "--out", history.events,
                             "--audit", history.db, *extra])
    succeeded(res)
    assert_history_kept(history)
    new = events_of(history.events)[len(history.text.splitlines()):]
    kinds = [e["type"] for e in new]
    first_error = kinds.index("error")
    errors = [e for e in new if e["type"] == "error"]
    assert any(problem in e["message"] for e in errors) and all("\n" not in e["message"] for e in errors)
    assert all(e["where"] == "source" for e in errors)
    assert "frame" in kinds[first_error:], "frames keep coming after the camera came back"
    assert kinds.count("frame") == 12 and "verdict" in kinds  # one item in view: one verdict
    assert len(audit_rows(history.db)) > len(history.rows)


def test_camera_that_never_opens_is_one_line(bundle_dir, history):
    line = one_line_error(invoke(scan_main, ["run", "--bundle", bundle_dir, "--source", "sim://?fail_opens=1",
                                             "--out", history.events, "--audit", history.db]))
    assert "simulated open failure" in line
    assert_history_untouched(history)


# ------------------------------------------------------------------------------- damaged bundles


def damaged_bundle(root: Path, how: str) -> Path:
    bundle = make_fake_bundle(root / "bundle", int8=True)
    if how == "altered file":
        with open(bundle / "parts.onnx", "ab") as fh:
            fh.write(b"\0")
    elif how == "truncated onnx":
        data = (bundle / "global.onnx").read_bytes()
        (bundle / "global.onnx").write_bytes(data[: len(data) // 2])
    elif how == "truncated onnx, manifest rewritten":  # the sha256 matches: onnxruntime must refuse it
        for path in bundle.glob("*.onnx"):
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        write_manifest(bundle, load_bundle(bundle, verify=False).manifest)
    return bundle


DAMAGE = {
    "altered file": "parts.onnx does not match its sha256",
    "truncated onnx": "global.onnx does not match its sha256",
    "truncated onnx, manifest rewritten": "onnxruntime cannot load it",
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_scan_refuses_a_damaged_bundle_in_one_line(tmp_path, good_folder, history, how):
    bundle = damaged_bundle(tmp_path, how)
    line = one_line_error(invoke(scan_main, ["run", "--bundle", bundle, "--source", f"file://{good_folder}",
                                             "--out", history.events, "--audit", history.db]))
    assert DAMAGE[how] in line
    assert_history_untouched(history)


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_bench_refuses_a_damaged_bundle(tmp_path, how):
    bundle = damaged_bundle(tmp_path, how)
    res = invoke(bench_main, ["--bundle", bundle, "--frames", "2", "--warmup", "0"])
    if how == "truncated onnx, manifest rewritten":
        # the bundle loads, the row fails: the table shows the row 'failed' with its one-line reason
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
        reasons = [ln for ln in res.output.splitlines() if DAMAGE[how] in ln]
        assert len(reasons) == 1 and " failed " in reasons[0], res.output
    else:
        assert DAMAGE[how] in one_line_error(res)


# ------------------------------------------------------- an engine from another TensorRT version / GPU

THIS_DEVICE = DeviceInfo("10.3.0", "Orin", "8.7")


class _FakeCuda:
    name = "fake"
    skipped: list = []

    def device(self):
        return THIS_DEVICE.gpu_name, (8, 7)

    def close(self):
        pass


@pytest.fixture()
def fake_tensorrt(monkeypatch):
    """TensorRT 10.3.0 on an 'Orin' GPU; its runtime cannot deserialize any plan (none was built by it)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = THIS_DEVICE.trt_version
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None,
                                        "deserialize_cuda_engine": lambda self, data: None})
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_buffers, "load_cuda", lambda prefer=None: _FakeCuda())


def cache_engines(bundle: Path, device: DeviceInfo) -> None:
    """Put int8 plans for both graphs into BUNDLE/engines as `mgfen-export --engine` on `device` would."""
    b = load_bundle(bundle)
    engine_dir = bundle / names.ENGINE_DIR
    engine_dir.mkdir(exist_ok=True)
    index = {}
    for graph in names.GRAPHS:
        onnx_name = onnx_for(b, graph, "int8")
        key = cache_key(b.manifest.files[onnx_name].sha256, device, "int8")
        plan = write(engine_dir / plan_name(graph, key), f"plan built by TensorRT {device.trt_version}".encode())
        index[key.digest()] = {"file": plan.name, "plan_sha256": sha256_file(plan), "onnx": onnx_name,
                               "graph": graph, "key": dataclasses.asdict(key)}
    write_index(engine_dir, index)


@pytest.mark.parametrize("built_on", [
    dataclasses.replace(THIS_DEVICE, trt_version="8.6.2"),
    dataclasses.replace(THIS_DEVICE, gpu_name="Xavier", compute_capability="7.2"),
], ids=["other-tensorrt", "other-gpu"])
def test_stale_engine_is_refused_by_trt_and_ignored_by_auto(tmp_path, good_folder, fake_tensorrt, built_on):
    bundle = make_fake_bundle(tmp_path / "bundle", int8=True)
    cache_engines(bundle, built_on)
    line = one_line_error(invoke(scan_main, ["run", "--bundle", bundle, "--source", f"file://{good_folder}",
                                             "--backend", "trt"]))
    assert "no TensorRT engine for global at int8 for this GPU and TensorRT version" in line
    assert f"mgfen-export {bundle} --engine --precision int8" in line
    res = invoke(scan_main, ["run", "--bundle", bundle, "--source", f"file://{good_folder}", "--backend", "auto",
                             "--min-frames", "1"])
    succeeded(res)
    assert "backends: ort:" in res.output and "classified 2" in res.output


def test_unloadable_engine_under_this_devices_key_is_one_line(tmp_path, good_folder, fake_tensorrt):
    """The index says 'built here', but TensorRT cannot deserialize the plan (copied from elsewhere)."""
    bundle = make_fake_bundle(tmp_path / "bundle", int8=True)
    cache_engines(bundle, THIS_DEVICE)
    for backend in ("trt", "auto"):
        line = one_line_error(invoke(scan_main, ["run", "--bundle", bundle, "--source", f"file://{good_folder}",
                                                 "--backend", backend]))
        assert "cannot load this engine (built with another TensorRT version or GPU?)" in line
        assert "mgfen-export --engine" in line


# ------------------------------------------------------------------- checkpoints and calibration


@pytest.fixture()
def earlier_bundle(tmp_path) -> tuple[Path, dict]:
    bundle = make_fake_bundle(tmp_path / "bundle", int8=True)
    return bundle, tree_digest(bundle)


def test_export_refuses_a_checkpoint_of_another_architecture(checkpoints, earlier_bundle):
    from export.cli import main as export_main

    _, other = checkpoints
    bundle, before = earlier_bundle
    line = one_line_error(invoke(export_main, [other, "--out", bundle]))
    assert "checkpoint of another architecture" in line and "other.pt" in line
    assert tree_digest(bundle) == before and load_bundle(bundle).manifest.k == 4


@pytest.mark.parametrize("case", ["empty folder", "corrupt calibration image", "corrupt val image"])
def test_export_refuses_unusable_calibration_images_before_touching_the_bundle(tmp_path, checkpoints, dataset,
                                                                              earlier_bundle, case):
    """--calib DATASET uses train/ to calibrate and val/ to gate INT8: a bad image in either must fail
    before the earlier bundle in --out is overwritten (it used to fail after the ONNX export)."""
    from export.cli import main as export_main

    good, _ = checkpoints
    bundle, before = earlier_bundle
    calib = tmp_path / "calib"
    if case == "empty folder":
        write(calib / "README.txt", b"calibration images go here")
        expected = "no calibration images"
    else:
        calib = copy_dataset(dataset, calib)
        split = "train" if case == "corrupt calibration image" else "val"
        victim = sorted((calib / split / "genuine").glob("*.png"))[0]
        victim.write_bytes(b"")
        expected = f"{victim.name}: empty file"
    line = one_line_error(invoke(export_main, [good, "--out", bundle, "--int8", "--calib", calib,
                                               "--calib-n", "64"]))
    assert expected in line
    assert tree_digest(bundle) == before and load_bundle(bundle).manifest.k == 4


# --------------------------------------------------------------------------------- data folders


@pytest.mark.parametrize("case, damage, expected", [
    ("zero-byte", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:200]), "truncated image file"),
    ("1x1", lambda p: cv2.imwrite(str(p), np.zeros((1, 1, 3), np.uint8)), "frame 1x1 is too small"),
    ("not an image", lambda p: p.write_bytes(b"%PDF-1.4 a document saved as .png"), "not a readable image"),
])
def test_train_names_the_bad_image_and_keeps_the_earlier_run(tmp_path, dataset, case, damage, expected):
    from train.cli.mgfen_train import main as train_main

    data = copy_dataset(dataset, tmp_path / "data")
    victim = sorted((data / "val" / "counterfeit").glob("*.png"))[0]
    damage(victim)
    run = tmp_path / "run"  # an earlier run in the same --out folder
    write(run / "best.pt", b"earlier checkpoint")
    write(run / "metrics.json", b'{"val_acc": 0.9}')
    before = tree_digest(run)
    line = one_line_error(invoke(train_main, ["--data", data, "--out", run, "--epochs", "1", "--backbone", "resnet18",
                                              "--pretrained", "none", "--frame-size", "128", "--global-size", "64",
                                              "--crop-size", "32", "--threads", "1", "--bg-replace", "0"]),
                          alone=False)  # progress bars may come first
    assert victim.name in line and expected in line
    assert tree_digest(run) == before


def test_eval_ignores_non_image_files_and_converts_odd_formats(tmp_path, dataset, checkpoints):
    """README/.DS_Store/Thumbs.db/a PDF beside the images, no manifest.csv (the folder walk), and test
    images saved as grayscale, RGBA and 16-bit: evaluated like any other image."""
    from train.cli.mgfen_eval import main as eval_main

    good, _ = checkpoints
    data = copy_dataset(dataset, tmp_path / "data")
    (data / "manifest.csv").unlink()
    tests = sorted((data / "test").rglob("*.png"))
    for path, convert in zip(tests, (lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2GRAY),
                                     lambda im: cv2.cvtColor(im, cv2.COLOR_BGR2BGRA),
                                     lambda im: im.astype(np.uint16) * 257)):
        write(path, convert(cv2.imread(str(path))))
    for name in ("README.txt", ".DS_Store", "test/Thumbs.db", "test/genuine/notes.pdf", "docs/card.json"):
        write(data / name, b"not an image")
    res = invoke(eval_main, ["--ckpt", good, "--data", data, "--json"])
    succeeded(res)
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["metrics"]["n"] == len(tests)


def test_eval_on_a_data_folder_with_one_class(tmp_path, dataset, checkpoints):
    from train.cli.mgfen_eval import main as eval_main

    good, _ = checkpoints
    data = copy_dataset(dataset, tmp_path / "data")
    (data / "manifest.csv").unlink()
    for split in ("train", "val", "test"):
        shutil.rmtree(data / split / "counterfeit")
    line = one_line_error(invoke(eval_main, ["--ckpt", good, "--data", data]))
    assert "only one class (genuine); need at least two" in line


def test_missing_masks_are_one_line(tmp_path, dataset, checkpoints):
    """Background work needs foreground masks: augment and the background-reliance suite say so."""
    from train.cli.mgfen_data import main as data_main
    from train.cli.mgfen_eval import main as eval_main

    good, _ = checkpoints
    data = copy_dataset(dataset, tmp_path / "data")
    shutil.rmtree(data / "masks")
    line = one_line_error(invoke(data_main, ["augment", "--data", data, "--out", tmp_path / "aug"]),
                          alone=False)  # an empty progress bar comes first
    assert "have no mask" in line and "mgfen-data masks" in line
    assert not (tmp_path / "aug").exists()
    line = one_line_error(invoke(eval_main, ["--ckpt", good, "--data", data, "--bg-suite", "--bg-m", "1"]),
                          alone=False)
    assert "no foreground mask" in line and "mgfen-data masks" in line
