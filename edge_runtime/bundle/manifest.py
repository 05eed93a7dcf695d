"""The bundle manifest: the only thing the runtime reads about a model.

A bundle is a folder with manifest.json and model files. export/ writes it with `write_manifest`; the
scanner reads it with `load_bundle`, which rejects unknown keys, a newer schema, missing files and any
file whose sha256 no longer matches, and with `trust=PUBKEY` a manifest.json not signed by that key
(edge_runtime.bundle.signing, which holds the keys and the signature maths and imports nothing of this module;
`sign_bundle` here checks a bundle and signs it). The model id is the sha256 of manifest.json's bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime import __version__
from edge_runtime.bundle.int8_gate import flavour_status, parse_record
from edge_runtime.bundle.signing import SigningError, SigningKey, load_signing_key, verify_manifest, write_signature
from edge_runtime.errors import BundleError
from edge_runtime.names import CLASS_NAMES, MANIFEST_FILE
from edge_runtime.preprocess import PreprocessConfig
from edge_runtime.quality_fit import gate_for_bundle
from edge_runtime.roi import Thresholds

SCHEMA_VERSION = 1  # the manifest's layout (keys and their meaning): read only when equal
# What a bundle holds and how export/ made it. Bump it (and the toolkit version) with any change to that;
# the runtime refuses a bundle of a newer format and reads older ones. A manifest without the field is 1.
# 2 (toolkit 0.2.0): the field itself; bundles written by the transactional export.
# 3 (toolkit 0.3.0): `quality`, the retake gate fitted on the train photos (edge_runtime.quality_fit).
BUNDLE_FORMAT = 3
PRECISIONS = ("fp32", "fp16", "int8")
FLAVOURS = (None, "cpu", "trt")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """One model file: which graph it holds, its precision, INT8 flavour (cpu | trt | None), sha256."""

    graph: str
    precision: str
    sha256: str
    flavour: str | None = None


@dataclass(frozen=True)
class Manifest:
    """Everything the runtime needs to preprocess, run and decide, plus provenance.

    tensors: {graph: {"inputs": {name: shape}, "outputs": {name: shape}}} with fixed integer shapes.
    files: {file name: FileEntry}. provenance: checkpoint sha256, data hash, metrics, config (free JSON).
    calibration: method, count and content hashes of the calibration images, or None.
    int8_gate: the export's INT8-vs-FP32 verdict gate per flavour (edge_runtime.bundle.int8_gate), or None.
    quality: the retake gate fitted on the train photos (edge_runtime.quality_fit.fit_gate's record), or None
        (older checkpoints: the scanner uses the default gate).
    """

    classes: tuple[str, ...]
    preprocess: PreprocessConfig
    k: int
    box_size: float
    global_weight: float
    use_parts: bool
    thresholds: Thresholds
    tensors: dict
    files: dict
    provenance: dict = field(default_factory=dict)
    calibration: dict | None = None
    int8_gate: dict | None = None
    quality: dict | None = None
    schema_version: int = SCHEMA_VERSION
    toolkit_version: str = __version__
    bundle_format: int = BUNDLE_FORMAT

    @property
    def positive_index(self) -> int:
        """Index of the counterfeit class in the logits."""
        return self.classes.index(CLASS_NAMES[1]) if CLASS_NAMES[1] in self.classes else len(self.classes) - 1

    def file_for(self, graph: str, precision: str = "fp32", flavour: str | None = None) -> str | None:
        """Name of the file holding `graph` at that precision/flavour, or None if the bundle has none."""
        for name, entry in sorted(self.files.items()):
            if entry.graph == graph and entry.precision == precision and entry.flavour == flavour:
                return name
        return None

    def int8_status(self, flavour: str) -> str:
        """passed | failed-forced | unverified: the export gate of that INT8 flavour (cpu | trt)."""
        return flavour_status(self.int8_gate, flavour)

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "toolkit_version": self.toolkit_version,
            "bundle_format": self.bundle_format,
            "classes": list(self.classes),
            "preprocess": self.preprocess.to_dict(),
            "k": self.k,
            "box_size": self.box_size,
            "global_weight": self.global_weight,
            "use_parts": self.use_parts,
            "thresholds": dataclasses.asdict(self.thresholds),
            "tensors": self.tensors,
            "files": {name: dataclasses.asdict(e) for name, e in sorted(self.files.items())},
            "provenance": self.provenance,
            "calibration": self.calibration,
            "int8_gate": self.int8_gate,
            "quality": self.quality,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        """Parse a manifest dict; unknown or missing keys and bad values raise BundleError."""
        if not isinstance(data, dict):
            raise BundleError("manifest: top level must be a JSON object")
        bundle_format = check_bundle_format(data.get("bundle_format", 1))  # first: a newer one may add keys
        required = {"schema_version", "classes", "preprocess", "k", "box_size", "global_weight",
                    "use_parts", "thresholds", "tensors", "files"}
        optional = {"toolkit_version", "bundle_format", "provenance", "calibration", "int8_gate", "quality"}
        missing = sorted(required - set(data))
        unknown = sorted(set(data) - required - optional)
        if missing:
            raise BundleError(f"manifest: missing keys: {', '.join(missing)}")
        if unknown:
            raise BundleError(f"manifest: unknown keys: {', '.join(unknown)}")
        if data["schema_version"] != SCHEMA_VERSION:
            raise BundleError(
                f"manifest: schema version {data['schema_version']!r} is not supported "
                f"(this runtime reads {SCHEMA_VERSION}); re-export the bundle or update the toolkit")
        try:
            files = {}
            for name, entry in dict(data["files"]).items():
                fe = FileEntry(**entry)
                if fe.precision not in PRECISIONS or fe.flavour not in FLAVOURS:
                    raise ValueError(f"file {name}: bad precision/flavour {fe.precision}/{fe.flavour}")
                if "/" in name or "\\" in name or name.startswith("."):
                    raise ValueError(f"file name {name!r} must be a plain name inside the bundle")
                files[name] = fe
            manifest = cls(
                classes=tuple(str(c) for c in data["classes"]),
                preprocess=PreprocessConfig.from_dict(dict(data["preprocess"])),
                k=int(data["k"]),
                box_size=float(data["box_size"]),
                global_weight=float(data["global_weight"]),
                use_parts=bool(data["use_parts"]),
                thresholds=Thresholds(**data["thresholds"]),
                tensors=dict(data["tensors"]),
                files=files,
                provenance=dict(data.get("provenance") or {}),
                calibration=data.get("calibration"),
                int8_gate=parse_record(data.get("int8_gate")),
                quality=parse_quality(data.get("quality")),
                schema_version=int(data["schema_version"]),
                toolkit_version=str(data.get("toolkit_version", "")),
                bundle_format=bundle_format,
            )
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise BundleError(f"manifest: {exc}") from None
        if len(manifest.classes) < 2 or manifest.k < 1 or not 0.0 < manifest.box_size <= 1.0:
            raise BundleError("manifest: need >= 2 classes, k >= 1 and 0 < box_size <= 1")
        return manifest


def parse_quality(data: object) -> dict | None:
    """A manifest's `quality` record, checked: its thresholds must make a valid QualityConfig."""
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("thresholds"), dict):
        raise ValueError("quality must be an object with a thresholds object")
    gate_for_bundle(data)  # raises ValueError for unknown or out-of-range thresholds
    return data


def check_bundle_format(value: object) -> int:
    """The bundle format of a manifest, when this toolkit reads it; BundleError for a newer or bad one."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BundleError(f"manifest: bundle_format must be an integer >= 1, got {value!r}")
    if value > BUNDLE_FORMAT:
        raise BundleError(f"manifest: bundle format {value} is newer than this toolkit reads ({BUNDLE_FORMAT}); "
                          f"upgrade mgfen")
    return value


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its folder, manifest and model id (sha256 of manifest.json)."""

    root: Path
    manifest: Manifest
    model_id: str

    def path(self, name: str) -> Path:
        return self.root / name


def write_manifest(root: str | Path, manifest: Manifest) -> Path:
    """Write manifest.json into `root`, recomputing every listed file's sha256 from disk."""
    root = Path(root)
    files = {}
    for name, entry in manifest.files.items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{root}: manifest lists {name} but the file is missing")
        files[name] = dataclasses.replace(entry, sha256=sha256_file(path))
    data = dataclasses.replace(manifest, files=files).to_dict()
    out = root / MANIFEST_FILE
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(out)
    return out


def load_bundle(root: str | Path, verify: bool = True, trust: str | Path | None = None) -> Bundle:
    """Load and check a bundle folder.

    Raises BundleError when the folder or manifest.json is missing or malformed, a listed file is
    missing, or (verify=True) a file's sha256 differs from the manifest. With `trust` (a public key PEM
    file, edge_runtime.bundle.signing) manifest.json must also carry a valid signature by that key in
    manifest.sig: the signature is checked over the same bytes that are then parsed, before parsing.
    """
    root = Path(root)
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found")
    if not path.is_file():
        raise BundleError(f"{root}: not a bundle (no {MANIFEST_FILE})")
    raw = path.read_bytes()
    if trust is not None:
        verify_manifest(root, raw, trust)
    return bundle_from_bytes(root, raw, verify)


def sign_bundle(root: str | Path, key: str | Path | SigningKey) -> Path:
    """Sign ROOT/manifest.json and write ROOT/manifest.sig; return its path.

    key: a private key PEM path, or a SigningKey already loaded (so a CLI can check the key before a
    long export). The bundle is checked first (manifest parses, every listed file matches its sha256)
    and the signature is over exactly the bytes that were checked (edge_runtime.bundle.signing.write_signature).
    """
    root = Path(root)
    signer = key if isinstance(key, SigningKey) else load_signing_key(Path(key))
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise SigningError(f"{root}: not a bundle (no {MANIFEST_FILE}); nothing to sign")
    raw = path.read_bytes()
    bundle_from_bytes(root, raw, verify=True)
    return write_signature(root, raw, signer)


def bundle_from_bytes(root: str | Path, raw: bytes, verify: bool = True) -> Bundle:
    """The Bundle whose manifest.json holds `raw` (already read from ROOT): parse it and check the
    listed files (present; with verify, matching their sha256). BundleError otherwise."""
    root = Path(root)
    path = root / MANIFEST_FILE
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    try:
        manifest = Manifest.from_dict(data)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None
    for name, entry in sorted(manifest.files.items()):
        file = root / name
        if not file.is_file():
            raise BundleError(f"{root}: file {name} listed in the manifest is missing")
        if verify and sha256_file(file) != entry.sha256:
            raise BundleError(f"{root}: {name} does not match its sha256 in the manifest (altered or corrupt)")
    return Bundle(root=root, manifest=manifest, model_id=hashlib.sha256(raw).hexdigest())
