"""Signed bundles: key pairs (modes, no overwrite), sign + verify, and every refusal: unsigned, manifest
altered by one byte, model file altered after signing, another key, malformed manifest.sig, a public key
given to --sign; the CLIs refuse with one line; mgfen-export --sign end to end on a tiny checkpoint."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_runtime import names
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.bundle.manifest import sign_bundle
from edge_runtime.bundle.signing import SigningError, generate_keypair, key_id, load_signing_key
from edge_runtime.cli.keygen_cli import main as keygen_main
from edge_runtime.errors import BundleError
from fake_bundle import make_fake_bundle, make_image


def _bundle(root: Path) -> Path:
    """The tiny fake bundle (two ONNX graphs made with onnx.helper, no torch), k = 4."""
    return make_fake_bundle(root)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    team = generate_keypair(d / "team.key", d / "team.pub")
    other = generate_keypair(d / "other.key", d / "other.pub")
    return d, team, other


@pytest.fixture
def signed(tmp_path, keys):
    d = keys[0]
    root = _bundle(tmp_path / "bundle")
    sign_bundle(root, d / "team.key")
    return root


def _one_line_error(res, code: int = 1) -> str:
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and isinstance(res.exception, SystemExit), res.output
    return lines[0]


def test_keypair_modes_id_and_no_overwrite(tmp_path, keys):
    d, team, other = keys
    assert stat.S_IMODE((d / "team.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((d / "team.pub").stat().st_mode) == 0o644
    assert (d / "team.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (d / "team.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert key_id((d / "team.pub").read_bytes()) == team == load_signing_key(d / "team.key").key_id
    assert len(team) == 16 and team != other
    before = (d / "team.key").read_bytes()
    with pytest.raises(SigningError, match="already exists"):
        generate_keypair(d / "team.key", tmp_path / "new.pub")
    assert (d / "team.key").read_bytes() == before and not (tmp_path / "new.pub").exists()
    with pytest.raises(SigningError, match="already exists"):
        generate_keypair(tmp_path / "new.key", d / "team.pub")
    assert not (tmp_path / "new.key").exists(), "no half pair left behind"
    # --force replaces both, keeping the private key at 0600 even over a wider file
    (tmp_path / "k.key").write_text("old")
    (tmp_path / "k.key").chmod(0o644)
    (tmp_path / "k.pub").write_text("old")
    new = generate_keypair(tmp_path / "k.key", tmp_path / "k.pub", overwrite=True)
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert key_id((tmp_path / "k.pub").read_bytes()) == new


def test_keygen_cli(tmp_path):
    runner = CliRunner()
    res = runner.invoke(keygen_main, ["--out", str(tmp_path / "team")])
    assert res.exit_code == 0, res.output
    kid = key_id((tmp_path / "team.pub").read_bytes())
    assert kid in res.output and stat.S_IMODE((tmp_path / "team.key").stat().st_mode) == 0o600
    assert "already exists" in _one_line_error(runner.invoke(keygen_main, ["--out", str(tmp_path / "team")]))
    res = runner.invoke(keygen_main, ["--out", str(tmp_path / "team"), "--force"])
    assert res.exit_code == 0 and key_id((tmp_path / "team.pub").read_bytes()) != kid
    assert "folder not found" in _one_line_error(runner.invoke(keygen_main, ["--out", str(tmp_path / "no" / "k")]))


def test_sign_and_verify(signed, keys):
    d, team, _ = keys
    sig = json.loads((signed / names.SIGNATURE_FILE).read_text())
    assert sig["algorithm"] == "ed25519" and sig["key_id"] == team
    b = load_bundle(signed, trust=d / "team.pub")
    assert b.manifest.k == 4 and b.model_id == load_bundle(signed).model_id
    assert not list(signed.glob("*.tmp"))


def test_unsigned_bundle_refused(tmp_path, keys):
    root = _bundle(tmp_path / "b")
    with pytest.raises(BundleError, match=r"not signed \(no manifest.sig\)"):
        load_bundle(root, trust=keys[0] / "team.pub")
    assert load_bundle(root).manifest.k == 4  # without trust nothing changes


def test_manifest_altered_by_one_byte_refused(signed, keys):
    path = signed / names.MANIFEST_FILE
    raw = bytearray(path.read_bytes())
    i = raw.index(b'"k": 4') + 5
    raw[i:i + 1] = b"5"  # still valid JSON, still a valid manifest: only the signature can tell
    path.write_bytes(bytes(raw))
    assert load_bundle(signed).manifest.k == 5
    with pytest.raises(BundleError, match="does not match manifest.json .altered after signing"):
        load_bundle(signed, trust=keys[0] / "team.pub")


def test_model_file_altered_after_signing_refused(signed, keys):
    (signed / "global.onnx").write_bytes(b"graph-A")
    with pytest.raises(BundleError, match="global.onnx does not match its sha256"):
        load_bundle(signed, trust=keys[0] / "team.pub")


def test_other_key_refused_naming_both_ids(signed, keys):
    d, team, other = keys
    sign_bundle(signed, d / "other.key")
    with pytest.raises(BundleError) as err:
        load_bundle(signed, trust=d / "team.pub")
    assert f"signed by key {other}" in str(err.value) and f"trusted key {team}" in str(err.value)
    assert load_bundle(signed, trust=d / "other.pub").manifest.k == 4


def test_forged_key_id_is_an_invalid_signature(signed, keys):
    d, team, _ = keys
    sign_bundle(signed, d / "other.key")
    sig_path = signed / names.SIGNATURE_FILE
    doc = json.loads(sig_path.read_text())
    sig_path.write_text(json.dumps(dict(doc, key_id=team)))
    with pytest.raises(BundleError, match="altered after signing"):
        load_bundle(signed, trust=d / "team.pub")


@pytest.mark.parametrize("edit, why", [
    (lambda raw: raw[: len(raw) // 2], "not JSON"),
    (lambda raw: b"\x00\xff garbage", "not JSON"),
    (lambda raw: b"[]", "expected exactly the keys"),
    (lambda raw: json.dumps(dict(json.loads(raw), extra=1)).encode(), "expected exactly the keys"),
    (lambda raw: json.dumps(dict(json.loads(raw), algorithm="rsa")).encode(), "algorithm 'rsa'"),
    (lambda raw: json.dumps(dict(json.loads(raw), signature="@@@")).encode(), "not base64"),
    (lambda raw: json.dumps(dict(json.loads(raw), signature="AAAA")).encode(), "3 bytes, expected 64"),
])
def test_malformed_signature_file_refused(signed, keys, edit, why):
    path = signed / names.SIGNATURE_FILE
    path.write_bytes(edit(path.read_bytes()))
    with pytest.raises(BundleError, match="malformed signature file") as err:
        load_bundle(signed, trust=keys[0] / "team.pub")
    assert why in str(err.value) and "\n" not in str(err.value)


def test_bad_key_files(tmp_path, keys):
    d = keys[0]
    root = _bundle(tmp_path / "b")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("hello")
    for key, message in [(d / "team.pub", "is a public key; signing needs the private key"),
                         (garbage, "not a PEM private key"), (tmp_path / "none.key", "not found")]:
        with pytest.raises(SigningError, match=message):
            sign_bundle(root, key)
    assert not (root / names.SIGNATURE_FILE).exists()
    sign_bundle(root, d / "team.key")
    for key, message in [(d / "team.key", "is a private key"), (garbage, "not a PEM public key"),
                         (tmp_path / "none.pub", "not found")]:
        with pytest.raises(BundleError, match=message):
            load_bundle(root, trust=key)
    with pytest.raises(SigningError, match="is a private key"):
        key_id((d / "team.key").read_bytes())


def test_sign_refuses_a_bundle_that_does_not_verify(tmp_path, keys):
    root = _bundle(tmp_path / "b")
    (root / "global.onnx").write_bytes(b"tampered before signing")
    with pytest.raises(BundleError, match="does not match its sha256"):
        sign_bundle(root, keys[0] / "team.key")
    assert not (root / names.SIGNATURE_FILE).exists()


def test_scan_and_bench_trust(tmp_path, keys):
    import cv2

    from edge_runtime.cli.bench_cli import main as bench_main
    from edge_runtime.cli.scan_cli import main as scan_main

    root = _bundle(tmp_path / "b")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "blue.png"), make_image("blue"))
    pub = str(keys[0] / "team.pub")
    scan = ["run", "--bundle", str(root), "--trust", pub, "--source", f"file://{images}", "--no-gate",
            "--backend", "ort", "--threads", "1"]
    assert "not signed" in _one_line_error(CliRunner().invoke(scan_main, scan))
    line = _one_line_error(CliRunner().invoke(bench_main, ["--bundle", str(root), "--trust", pub]))
    assert "not signed" in line
    sign_bundle(root, keys[0] / "team.key")
    res = CliRunner().invoke(scan_main, scan)
    assert res.exit_code == 0, res.output
    assert '"decision":"counterfeit"' in res.stdout
    sign_bundle(root, keys[0] / "other.key")
    assert f"not by the trusted key {keys[1]}" in _one_line_error(CliRunner().invoke(scan_main, scan))


def test_missing_cryptography_is_one_line(tmp_path, keys, monkeypatch):
    root = _bundle(tmp_path / "b")
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import cryptography now raises ImportError
    with pytest.raises(SigningError, match="pip install cryptography"):
        load_bundle(root, trust=keys[0] / "team.pub")
    assert load_bundle(root).manifest.k == 4  # unsigned use never needs it


def test_export_sign_end_to_end(tmp_path, keys):
    torch = pytest.importorskip("torch")
    from edge_runtime.preprocess import PreprocessConfig
    from export.cli import main as export_main
    from train.model.checkpoint import save_checkpoint
    from train.model.mgfen import ModelConfig, build_model

    torch.set_num_threads(1)
    d, team, other = keys
    torch.manual_seed(0)
    pre = PreprocessConfig(frame_size=128, global_size=64, crop_size=32)
    model = build_model(ModelConfig(backbone="resnet18", fpn_channels=16, preprocess=pre), pretrained=None).eval()
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, model, list(names.CLASS_NAMES), metrics={"accuracy": 0.5}, data_hash="d" * 16)
    out = tmp_path / "bundle"
    runner = CliRunner()
    # a bad key fails in a moment, before anything is exported
    line = _one_line_error(runner.invoke(export_main, [str(ckpt), "--out", str(out), "--sign", str(d / "team.pub")]))
    assert "is a public key" in line and not out.exists()
    res = runner.invoke(export_main, [str(ckpt), "--out", str(out), "--sign", str(d / "team.key"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert report["signature"]["key_id"] == team and team in res.stderr
    assert load_bundle(out, trust=d / "team.pub").manifest.k == 4
    with pytest.raises(BundleError, match=f"signed by key {team}, not by the trusted key {other}"):
        load_bundle(out, trust=d / "other.pub")
    res = runner.invoke(export_main, [str(out), "--engine", "--sign", str(d / "team.key")])
    assert res.exit_code == 2 and "engines are not covered" in res.output and isinstance(res.exception, SystemExit)
