"""Deterministic, stratified choice of calibration images, disjoint from the evaluation split.

    chosen = select_calibration(Path("data"), eval_dirs=[Path("data/val")])  # train split, up to 512
    chosen.paths, chosen.hashes  # sorted-order picks and their sha256 content hashes

Rules:
- Candidates are the images under the folder (sorted by relative path); when the folder is a dataset root
  (it has a `train/` split) only `train/` is used and `val/` + `test/` count as evaluation splits.
- Strata are (class, background): class from the parent folder name when it is a class name, background
  from the dataset's manifest.csv where one exists. Picks go round-robin over the sorted strata, and
  inside a stratum at evenly spaced positions, so the same folder and n always give the same images.
- The picks must not be evaluation images, by bytes (sha256 of the file) or by content (the 256-bit DCT
  perceptual hash of train.audit.image_stats, the one the dataset audit uses, within DUPLICATE_DISTANCE bits:
  a re-encoded, resized or brightened copy). An overlap is refused (CalibrationError), since calibrating
  on the images that then judge the INT8 model hides exactly the accuracy loss the gate is there to catch.
- No images, or a picked image that does not decode: refused. Random data is never substituted.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration import DEFAULT_CALIB_N, CalibrationError
from edge_runtime.bundle.manifest import sha256_file
from edge_runtime.errors import ImageError
from edge_runtime.names import CLASS_NAMES
from edge_runtime.preprocess import decode_image, list_images, read_image
from train.audit.image_stats import DUPLICATE_DISTANCE, hamming, phash

UNKNOWN = "?"
EVAL_SPLITS = ("val", "test")


@dataclass(frozen=True)
class CalibrationImage:
    """One calibration image: absolute path, path relative to the calibration root, sha256 of the bytes,
    class name (or "?") and background name (or "?")."""

    path: Path
    relpath: str
    sha256: str
    label: str = UNKNOWN
    background: str = UNKNOWN

    def to_dict(self) -> dict:
        return {"path": self.relpath, "sha256": self.sha256, "label": self.label,
                "background": self.background}


@dataclass(frozen=True)
class CalibrationSet:
    """The chosen images in selection order, where they came from and which splits they were kept off."""

    root: Path
    images: tuple[CalibrationImage, ...]
    available: int
    eval_dirs: tuple[Path, ...] = ()

    @property
    def paths(self) -> list[Path]:
        return [im.path for im in self.images]

    @property
    def hashes(self) -> list[str]:
        return [im.sha256 for im in self.images]

    def to_manifest(self, method: str) -> dict:
        """The manifest's `calibration` entry: method, n, images with content hashes, strata counts."""
        strata: dict[str, int] = {}
        for im in self.images:
            key = f"{im.label}/{im.background}"
            strata[key] = strata.get(key, 0) + 1
        return {"method": method, "n": len(self.images), "available": self.available,
                "source": self.root.name, "strata": dict(sorted(strata.items())),
                "kept_off": [p.name for p in self.eval_dirs],
                "images": [im.to_dict() for im in self.images]}


def _find_dataset_manifest(folder: Path) -> tuple[Path, dict[str, str]] | None:
    """(dataset root, {relative path: background}) from the nearest manifest.csv at or above `folder`
    (two levels up at most), or None."""
    for root in (folder, folder.parent, folder.parent.parent):
        path = root / "manifest.csv"
        if path.is_file():
            try:
                with open(path, newline="") as fh:
                    rows = list(csv.DictReader(fh))
            except (OSError, csv.Error, UnicodeDecodeError):
                return None
            if rows and "path" in rows[0]:
                return root, {r["path"]: (r.get("background") or UNKNOWN) for r in rows}
    return None


def _label_of(path: Path) -> str:
    return path.parent.name if path.parent.name in CLASS_NAMES else UNKNOWN


def _spread(count: int, total: int) -> list[int]:
    """`count` evenly spaced indices into range(total), deterministic, first index 0."""
    if count >= total:
        return list(range(total))
    return [(i * total) // count for i in range(count)]


def candidates(folder: Path) -> tuple[Path, list[CalibrationImage], list[Path]]:
    """(calibration root, sorted candidate images without hashes yet, evaluation split folders found
    inside a dataset root)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: calibration folder not found")
    root, evals = folder, []
    if (folder / "train").is_dir():
        root = folder / "train"
        evals = [folder / s for s in EVAL_SPLITS if (folder / s).is_dir()]
    found = _find_dataset_manifest(root)
    backgrounds: dict[str, str] = {}
    base = root
    if found is not None:
        base, backgrounds = found
    images = []
    for path in list_images(root):
        rel_ds = path.relative_to(base).as_posix()
        images.append(CalibrationImage(path=path, relpath=path.relative_to(root).as_posix(), sha256="",
                                       label=_label_of(path), background=backgrounds.get(rel_ds, UNKNOWN)))
    return root, images, evals


def stratified_pick(images: list[CalibrationImage], n: int) -> list[CalibrationImage]:
    """Pick n images round-robin over sorted (label, background) strata, evenly spaced inside each."""
    strata: dict[tuple[str, str], list[CalibrationImage]] = {}
    for im in images:
        strata.setdefault((im.label, im.background), []).append(im)
    keys = sorted(strata)
    quota = dict.fromkeys(keys, 0)
    left = min(n, len(images))
    while left > 0:
        for key in keys:
            if left and quota[key] < len(strata[key]):
                quota[key] += 1
                left -= 1
    picked = []
    for key in keys:
        members = strata[key]
        picked += [members[i] for i in _spread(quota[key], len(members))]
    return sorted(picked, key=lambda im: im.relpath)


def content_hashes(folders: list[Path]) -> tuple[dict[str, Path], list[Path], np.ndarray]:
    """Of every image under the folders: ({sha256 of file bytes: path}, the paths that decode, their
    perceptual hashes [N, 32] uint8). An image that does not decode has no perceptual hash (its bytes
    are still compared)."""
    by_bytes: dict[str, Path] = {}
    decoded: list[Path] = []
    perceptual: list[np.ndarray] = []
    for folder in folders:
        for path in list_images(folder):
            data = path.read_bytes()
            by_bytes.setdefault(hashlib.sha256(data).hexdigest(), path)
            try:
                perceptual.append(phash(decode_image(data, str(path))))
            except ImageError:
                continue
            decoded.append(path)
    return by_bytes, decoded, np.array(perceptual, np.uint8).reshape(len(perceptual), -1)


def select_calibration(folder: str | Path, n: int = DEFAULT_CALIB_N,
                       eval_dirs: list[str | Path] | None = None) -> CalibrationSet:
    """Choose up to `n` calibration images from `folder` (see module doc): all of them when there are
    at most n, else n stratified picks.

    eval_dirs: evaluation folders (e.g. --val) whose images must not be chosen, in addition to a dataset
    root's own val/ and test/. Raises CalibrationError for a missing or empty folder, n < 1, a picked
    image that does not decode, or an overlap by bytes or perceptual hash with any evaluation image.
    """
    if n < 1:
        raise CalibrationError(f"--calib-n must be >= 1, got {n}")
    root, images, evals = candidates(Path(folder))
    if not images:
        raise CalibrationError(f"{folder}: no calibration images found (INT8 needs real images; "
                               "random data is never used)")
    picked = stratified_pick(images, n)
    pick_hashes = []
    for im in picked:  # an image that does not decode fails now, not after an export has started writing
        try:
            pick_hashes.append(phash(read_image(im.path)))
        except ImageError as exc:
            raise CalibrationError(f"unusable calibration image: {exc}") from None
    picked = [CalibrationImage(im.path, im.relpath, sha256_file(im.path), im.label, im.background)
              for im in picked]
    all_evals = sorted({Path(p).resolve() for p in [*evals, *(eval_dirs or [])]})
    if all_evals:
        by_bytes, eval_paths, eval_phash = content_hashes([p for p in all_evals if p.is_dir()])
        clashes = [(im, by_bytes[im.sha256], "the same bytes as") for im in picked if im.sha256 in by_bytes]
        if eval_paths:
            dist = hamming(np.stack(pick_hashes), eval_phash)  # [picks, evaluation images]
            clashes += [(im, eval_paths[int(dist[i].argmin())], f"{int(dist[i].min())} of 256 hash bits from")
                        for i, im in enumerate(picked)
                        if dist[i].min() <= DUPLICATE_DISTANCE and im.sha256 not in by_bytes]
        if clashes:
            im, other, how = clashes[0]
            raise CalibrationError(
                f"calibration images overlap the evaluation split: {len(clashes)} of {len(picked)} have the "
                f"same content as an evaluation image (e.g. {im.path}: {how} {other}); refusing, choose "
                "calibration images from the training split")
    return CalibrationSet(root=root, images=tuple(picked), available=len(images), eval_dirs=tuple(all_evals))
