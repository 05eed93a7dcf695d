"""Offline background replacement: write a copy of a dataset with N background-replaced copies per image.

    OUT/{split}/{class}/<stem>.png          the original (re-encoded as PNG), every split
    OUT/{split}/{class}/<stem>_bg{k}.png    copy k = 1..N, only in the augmented splits (default: train)
    OUT/masks/<same relative path>          the foreground mask of every file written
    OUT/manifest.csv                        path,split,label,group,background (copies keep the original's
                                            group, so a group-aware split never separates them)
    OUT/augment.json                        the parameters and counts

Backgrounds come from a train.enhance.backgrounds.BackgroundLibrary (photo folder and/or procedural families) and
are pasted with train.enhance.blend.replace_background. Copy k of image i uses numpy Generator([seed, i, k]): the
same arguments give the same bytes.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge_runtime.errors import MgfenError
from edge_runtime.preprocess import read_image
from train.enhance.blend import BLEND_MODES, replace_background

AUGMENT_CARD = "augment.json"
MANIFEST_COLUMNS = ("path", "split", "label", "group", "background")


class AugmentError(MgfenError):
    """Bad augment parameters, an output folder that cannot be used, or images without masks."""


@dataclass(frozen=True)
class OfflineAugmentConfig:
    """copies: background-replaced copies per image of the augmented splits. blend: train.enhance.blend mode.
    splits: the splits that get copies (others are copied unchanged). seed: reproducibility."""

    copies: int = 4
    blend: str = "alpha"
    splits: tuple[str, ...] = ("train",)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.copies <= 1000:
            raise AugmentError(f"--copies must be in [1, 1000], got {self.copies}")
        if self.blend not in BLEND_MODES:
            raise AugmentError(f"unknown blend {self.blend!r}; expected one of {', '.join(BLEND_MODES)}")
        bad = [s for s in self.splits if s not in ("train", "val", "test")]
        if bad or not self.splits:
            raise AugmentError(f"--splits must name train, val and/or test, got {','.join(self.splits) or 'nothing'}")


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise AugmentError("PNG encoding failed")
    return buf.tobytes()


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AugmentError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise AugmentError(f"--out {out} is not empty; pass --overwrite to replace an earlier augment output there")
        if not (out / AUGMENT_CARD).is_file():
            raise AugmentError(f"refusing to overwrite {out}: it is not an mgfen-data augment output (no {AUGMENT_CARD})")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _manifest_backgrounds(root: Path) -> dict[str, str]:
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {r["path"]: r.get("background") or "" for r in csv.DictReader(fh)}


def augment_dataset(
    data: Path,
    out: Path,
    library,
    config: OfflineAugmentConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write the augmented dataset (layout in the module docstring); return a JSON-able summary.

    data: a dataset folder (train.data.folders.index_folder layout) with masks under data/masks; library: anything
    with .sample(rng, h, w) -> (HxWx3 uint8 BGR, name). Images of the augmented splits must all have masks.
    """
    from train.data.folders import index_folder  # the dataset's own discovery rules (torch import is fine here)

    data, out = Path(data), Path(out)
    if data.resolve() == out.resolve():
        raise AugmentError("--out must differ from --data")
    index = index_folder(data, seed=config.seed)
    masks_root = data / "masks"
    missing = [s.path for s in index.samples if s.split in config.splits and not (masks_root / s.path).with_suffix(".png").is_file()
               and not (masks_root / s.path).is_file()]
    if missing:
        raise AugmentError(
            f"{len(missing)} image(s) of the augmented splits have no mask, e.g. {masks_root / missing[0]}; "
            "make masks with `mgfen-data masks --ref IMG --ref-mask MASK --data DIR`"
        )
    _prepare_out(out, overwrite)
    backgrounds = _manifest_backgrounds(data)
    rows: list[tuple[str, str, str, str, str]] = []
    counts = {"originals": 0, "copies": 0}
    for i, s in enumerate(index.samples):
        cls = index.classes[s.label]
        stem = Path(s.path).stem
        rel = f"{s.split}/{cls}/{stem}.png"
        image = read_image(data / s.path)
        mpath = masks_root / s.path
        if not mpath.is_file():
            mpath = mpath.with_suffix(".png")
        mask = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE) if mpath.is_file() else None
        if mpath.is_file() and mask is None:
            raise AugmentError(f"{mpath}: unreadable mask")
        if mask is not None and mask.shape != image.shape[:2]:
            raise AugmentError(f"{mpath}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(_png(image))
        if mask is not None:
            (out / "masks" / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / "masks" / rel).write_bytes(_png(mask))
        rows.append((rel, s.split, cls, s.group, backgrounds.get(s.path, "original")))
        counts["originals"] += 1
        if s.split in config.splits:
            if mask is None or not (mask >= 128).any():
                raise AugmentError(f"{mpath}: the mask is empty (no foreground to keep)")
            h, w = image.shape[:2]
            for k in range(1, config.copies + 1):
                rng = np.random.default_rng([config.seed, i, k])
                bg, name = library.sample(rng, h, w)
                copy = replace_background(image, mask >= 128, bg, config.blend)
                crel = f"{s.split}/{cls}/{stem}_bg{k}.png"
                (out / crel).write_bytes(_png(copy))
                (out / "masks" / crel).write_bytes(_png(mask))
                rows.append((crel, s.split, cls, s.group, name))
                counts["copies"] += 1
        if progress:
            progress(1)
    rows.sort()
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        w.writerows(rows)
    summary = {
        "data": str(data),
        "out": str(out),
        "config": {**asdict(config), "splits": list(config.splits)},
        "backgrounds": list(getattr(library, "names", ())),
        "images": len(rows),
        **counts,
    }
    (out / AUGMENT_CARD).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
