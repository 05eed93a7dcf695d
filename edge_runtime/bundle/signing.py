"""Signed bundles: an Ed25519 signature over the exact bytes of manifest.json.

manifest.json lists the sha256 of every model file, so a signature over its bytes covers the graphs too:
`load_bundle(root, trust=PUBKEY)` checks the signature over the bytes it parses, then the sha256 of every
listed file. The signature lives in ROOT/manifest.sig, a small JSON object:

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64 of 64 bytes>"}

Keys are PEM files: the private key PKCS8 unencrypted (mode 0600), the public key SubjectPublicKeyInfo.
A key id is the first 16 hex of the sha256 of the raw 32-byte public key.

`cryptography` is imported inside the functions, so edge_runtime imports without it; using a function
without it installed raises SigningError naming `pip install cryptography`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edge_runtime.errors import BundleError
from edge_runtime.names import MANIFEST_FILE, SIGNATURE_FILE

ALGORITHM = "ed25519"
SIGNATURE_BYTES = 64
SIG_KEYS = ("algorithm", "key_id", "signature")


class SigningError(BundleError):
    """A key file that cannot be used, or a bundle whose signature is missing, malformed or wrong."""


def _crypto() -> SimpleNamespace:
    """The cryptography modules this file uses, as a namespace; SigningError when not installed."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SigningError("signed bundles need the cryptography package: pip install cryptography") from None
    return SimpleNamespace(serialization=serialization, ed25519=ed25519,
                           InvalidSignature=exceptions.InvalidSignature,
                           UnsupportedAlgorithm=exceptions.UnsupportedAlgorithm)


def _raw_public(public_key) -> bytes:
    c = _crypto()
    return public_key.public_bytes(c.serialization.Encoding.Raw, c.serialization.PublicFormat.Raw)


def key_id(public_key_pem: bytes) -> str:
    """Short fingerprint of a public key PEM: first 16 hex of sha256(raw 32-byte Ed25519 public key)."""
    return _key_id_of(_parse_public(public_key_pem, "public key"))


def _key_id_of(public_key) -> str:
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _read_key_file(path: Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise SigningError(f"{path}: {what} file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


def _parse_public(data: bytes, where: str):
    c = _crypto()
    if b"PRIVATE KEY" in data:
        raise SigningError(f"{where}: is a private key; give the public key (PREFIX.pub) instead, and keep "
                           "the private key off the scanner")
    try:
        key = c.serialization.load_pem_public_key(data)
    except (ValueError, TypeError, c.UnsupportedAlgorithm):
        raise SigningError(f"{where}: not a PEM public key (make keys with mgfen-keygen)") from None
    if not isinstance(key, c.ed25519.Ed25519PublicKey):
        raise SigningError(f"{where}: not an Ed25519 public key (make keys with mgfen-keygen)")
    return key


@dataclass(frozen=True)
class SigningKey:
    """A loaded Ed25519 private key and the id of its public half."""

    private: Any  # cryptography Ed25519PrivateKey
    key_id: str
    path: Path


def load_signing_key(path: str | Path) -> SigningKey:
    """Load an unencrypted PKCS8 PEM Ed25519 private key; SigningError with one line otherwise."""
    path = Path(path)
    data = _read_key_file(path, "private key")
    c = _crypto()
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:
        raise SigningError(f"{path}: is a public key; signing needs the private key (PREFIX.key)")
    try:
        key = c.serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningError(f"{path}: the private key is encrypted; give an unencrypted PKCS8 key "
                           "(make one with mgfen-keygen)") from None
    except (ValueError, c.UnsupportedAlgorithm):
        raise SigningError(f"{path}: not a PEM private key (make keys with mgfen-keygen)") from None
    if not isinstance(key, c.ed25519.Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 private key (make keys with mgfen-keygen)")
    return SigningKey(private=key, key_id=_key_id_of(key.public_key()), path=path)


def load_trusted_key(path: str | Path) -> tuple[Any, str]:
    """(Ed25519PublicKey, key id) from a public key PEM file; SigningError with one line otherwise."""
    path = Path(path)
    key = _parse_public(_read_key_file(path, "trusted public key"), str(path))
    return key, _key_id_of(key)


# ------------------------------------------------------------------------------------------ key pairs


def _write_new(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write `data` to `path` with permission `mode`. Without overwrite the file is created with O_EXCL
    (an existing file is never touched); with overwrite it goes through a temporary file + replace, so
    a replaced private key never passes through a wider mode."""
    target = path if not overwrite else path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    if overwrite:
        target.unlink(missing_ok=True)
    fd = os.open(target, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widened beyond `mode`
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        target.unlink(missing_ok=True)
        raise
    if overwrite:
        os.replace(target, path)


def generate_keypair(private_path: str | Path, public_path: str | Path, overwrite: bool = False) -> str:
    """Make an Ed25519 key pair: private key PEM (PKCS8, unencrypted, mode 0600) and public key PEM
    (SubjectPublicKeyInfo, mode 0644). Refuses existing files unless overwrite. Returns the key id."""
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise SigningError(f"{private_path}: private and public key paths must differ")
    if not overwrite:
        for p in (private_path, public_path):
            if p.exists() or p.is_symlink():
                raise SigningError(f"{p}: already exists; refusing to overwrite a key (use --force)")
    c = _crypto()
    key = c.ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(c.serialization.Encoding.PEM, c.serialization.PrivateFormat.PKCS8,
                                    c.serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(c.serialization.Encoding.PEM,
                                               c.serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        _write_new(private_path, private_pem, 0o600, overwrite)
    except FileExistsError:
        raise SigningError(f"{private_path}: already exists; refusing to overwrite a key (use --force)") from None
    except OSError as exc:
        raise SigningError(f"{private_path}: cannot write the private key ({exc.strerror or exc})") from None
    try:
        _write_new(public_path, public_pem, 0o644, overwrite)
    except OSError as exc:
        if not overwrite:
            private_path.unlink(missing_ok=True)  # no half pair left behind
        reason = "already exists; refusing to overwrite a key (use --force)" if isinstance(
            exc, FileExistsError) else f"cannot write the public key ({exc.strerror or exc})"
        raise SigningError(f"{public_path}: {reason}") from None
    return _key_id_of(key.public_key())


# ------------------------------------------------------------------------------------ sign and verify


def write_signature(root: str | Path, manifest_bytes: bytes, signer: SigningKey) -> Path:
    """Sign `manifest_bytes` (ROOT/manifest.json's exact bytes, already checked by the caller) and write
    ROOT/manifest.sig (tmp + replace); return its path. edge_runtime.bundle.manifest.sign_bundle checks the
    bundle and calls this, so this module never imports the manifest's."""
    doc = {"algorithm": ALGORITHM, "key_id": signer.key_id,
           "signature": base64.b64encode(signer.private.sign(manifest_bytes)).decode("ascii")}
    out = Path(root) / SIGNATURE_FILE
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(out)
    except OSError as exc:
        raise SigningError(f"{out}: cannot write the signature ({exc.strerror or exc})") from None
    return out


def parse_signature(data: bytes, where: str) -> tuple[str, bytes]:
    """(key id, 64 signature bytes) from the bytes of a manifest.sig; SigningError when malformed."""
    def bad(why: str) -> SigningError:
        return SigningError(f"{where}: malformed signature file ({why}); re-sign the bundle")

    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not JSON") from None
    if not isinstance(doc, dict) or sorted(doc) != sorted(SIG_KEYS):
        raise bad(f"expected exactly the keys {', '.join(SIG_KEYS)}")
    if doc["algorithm"] != ALGORITHM:
        raise bad(f"algorithm {doc['algorithm']!r}, expected {ALGORITHM!r}")
    if not isinstance(doc["key_id"], str) or not isinstance(doc["signature"], str):
        raise bad("key_id and signature must be strings")
    try:
        sig = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise bad("signature is not base64") from None
    if len(sig) != SIGNATURE_BYTES:
        raise bad(f"signature has {len(sig)} bytes, expected {SIGNATURE_BYTES}")
    return doc["key_id"], sig


def verify_manifest(root: str | Path, manifest_bytes: bytes, trust: str | Path) -> str:
    """Check that ROOT/manifest.sig signs exactly `manifest_bytes` with the public key in file `trust`.
    Returns the key id. Raises SigningError (a BundleError) with one line for: a bad trusted key file,
    an unsigned bundle, a malformed signature file, a signature by another key, an invalid signature."""
    root = Path(root)
    public, trusted_id = load_trusted_key(trust)
    sig_path = root / SIGNATURE_FILE
    try:
        sig_bytes = sig_path.read_bytes()
    except FileNotFoundError:
        raise SigningError(f"{root}: bundle is not signed (no {SIGNATURE_FILE}); refusing it because a "
                           f"trusted key was given") from None
    except OSError as exc:
        raise SigningError(f"{sig_path}: cannot read the signature ({exc.strerror or exc})") from None
    signed_id, sig = parse_signature(sig_bytes, str(sig_path))
    if signed_id != trusted_id:
        raise SigningError(f"{root}: signed by key {signed_id}, not by the trusted key {trusted_id} ({trust})")
    c = _crypto()
    try:
        public.verify(sig, manifest_bytes)
    except c.InvalidSignature:
        raise SigningError(f"{root}: signature of key {trusted_id} does not match {MANIFEST_FILE} "
                           "(altered after signing)") from None
    return trusted_id
