"""Bundle manifest: round trip, sha256 checks, unknown keys, schema version, bundle format, missing files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle.manifest import BUNDLE_FORMAT, FileEntry, Manifest, load_bundle, sha256_file, write_manifest
from edge_runtime.errors import BundleError
from edge_runtime.names import CLASS_NAMES, MANIFEST_FILE, model_file
from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.roi import Thresholds
import edge_runtime


def _manifest() -> Manifest:
    files = {
        model_file("global"): FileEntry(graph="global", precision="fp32", sha256=""),
        model_file("parts", "int8", "cpu"): FileEntry(graph="parts", precision="int8", sha256="", flavour="cpu"),
    }
    return Manifest(
        classes=CLASS_NAMES,
        preprocess=PreprocessConfig(frame_size=128, global_size=64, crop_size=32),
        k=4, box_size=0.25, global_weight=1.0, use_parts=True,
        thresholds=Thresholds(0.3, 0.7),
        tensors={"global": {"inputs": {"image": [1, 3, 64, 64]}, "outputs": {}}},
        files=files, provenance={"metrics": {"accuracy": 1.0}},
    )


@pytest.fixture
def bundle(tmp_path):
    (tmp_path / "global.onnx").write_bytes(b"graph-a")
    (tmp_path / "parts.int8.cpu.onnx").write_bytes(b"graph-b")
    write_manifest(tmp_path, _manifest())
    return tmp_path


def test_roundtrip_and_hashes(bundle):
    loaded = load_bundle(bundle)
    m = loaded.manifest
    assert m.files["global.onnx"].sha256 == sha256_file(bundle / "global.onnx")
    assert m.preprocess == PreprocessConfig(frame_size=128, global_size=64, crop_size=32)
    assert m.file_for("parts", "int8", "cpu") == "parts.int8.cpu.onnx"
    assert m.file_for("parts", "int8", "trt") is None
    assert m.positive_index == 1
    assert len(loaded.model_id) == 64
    assert Manifest.from_dict(m.to_dict()) == m


def test_altered_file_is_refused(bundle):
    (bundle / "global.onnx").write_bytes(b"graph-A")
    with pytest.raises(BundleError, match="does not match its sha256"):
        load_bundle(bundle)
    assert load_bundle(bundle, verify=False).manifest.k == 4


def test_missing_file_and_folder(bundle, tmp_path_factory):
    (bundle / "parts.int8.cpu.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle)
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(empty)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(empty / "nope")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(extra=1), "unknown keys: extra"),
        (lambda d: d.pop("k"), "missing keys: k"),
        (lambda d: d.update(schema_version=99), "schema version 99"),
        (lambda d: d["files"]["global.onnx"].update(precision="int4"), "bad precision"),
        (lambda d: d["preprocess"].update(frame_size=-1), "frame_size"),
        (lambda d: d.update(files={"../x.onnx": d["files"]["global.onnx"]}), "plain name"),
        (lambda d: d.update(box_size=0), "box_size"),
    ],
)
def test_bad_manifests(bundle, edit, message):
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_not_json(bundle):
    (bundle / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle)


def test_bundle_records_its_format_and_the_one_toolkit_version(bundle):
    data = json.loads((bundle / MANIFEST_FILE).read_text())
    assert data["bundle_format"] == BUNDLE_FORMAT and data["toolkit_version"] == edge_runtime.__version__
    assert load_bundle(bundle).manifest.bundle_format == BUNDLE_FORMAT


def test_newer_bundle_format_is_refused_in_one_line(bundle):
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["bundle_format"] = BUNDLE_FORMAT + 1
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert str(info.value) == (f"{path}: manifest: bundle format {BUNDLE_FORMAT + 1} is newer than this toolkit "
                               f"reads ({BUNDLE_FORMAT}); upgrade mgfen")


@pytest.mark.parametrize("value", ["2", 0, True, None])
def test_bad_bundle_format_is_refused(bundle, value):
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["bundle_format"] = value
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError, match="bundle_format must be an integer"):
        load_bundle(bundle)


def test_older_bundle_without_the_format_field_loads(bundle):
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    del data["bundle_format"]
    data["toolkit_version"] = "0.1.0"
    path.write_text(json.dumps(data))
    loaded = load_bundle(bundle).manifest
    assert loaded.bundle_format == 1 and loaded.toolkit_version == "0.1.0"


def test_setup_cfg_reads_the_version_from_the_light_package():
    root = Path(__file__).resolve().parents[1]
    assert "version = attr: edge_runtime.__version__" in (root / "setup.cfg").read_text()
    # what setuptools evaluates for `attr:` must not pull in the scanner's heavy dependencies
    code = ("import sys, edge_runtime; print(edge_runtime.__version__); "
            "print(','.join(m for m in ('numpy', 'cv2', 'onnxruntime', 'onnx', 'torch', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [edge_runtime.__version__, ""]


def test_write_refuses_missing_file(tmp_path):
    with pytest.raises(BundleError, match="missing"):
        write_manifest(tmp_path, _manifest())
