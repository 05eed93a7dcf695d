"""Background-reliance suite (after ImageNet-9 "Noise or Signal"), built from foreground masks.

Variants of a split (every item keeps its own label, the label of its FOREGROUND):
- original:   the image as it is;
- only_fg:    the foreground on black;
- no_fg:      the image with the foreground (mask dilated by 1% of the side) painted black;
- mixed_same: the foreground on the background of another item of the SAME class;
- mixed_rand: the foreground on the background of a random other item (any class);
- mixed_next: the foreground on the background of an item of the NEXT class (index + 1 mod C).
BG-Gap = accuracy(mixed_same) - accuracy(mixed_rand): how much the model gains from a background that
agrees with the label. Adversarial backgrounds: each item's foreground is put on M backgrounds of other
items; the item is fooled when any of them changes its prediction away from the true label;
adversarial accuracy = fraction of items never fooled (correct on all M).

Where a background "of an item" comes from (`background_source`):
- "manifest": DIR/manifest.csv names the item's background; when it is one of the procedural families of
  train.enhance.backgrounds, a fresh sample of that family is rendered (seeded by item index). A clean,
  full-frame background of the same kind: what the synthetic dataset's class-background correlation is
  made of. Needs every item's name to be a family.
- "inpaint": the item's own photo with its foreground (dilated) removed and filled by cv2.inpaint (Telea,
  computed at 256 px and pasted back into the hole only). Works on any data with masks; the hole keeps a
  smooth smear where the other object was.
- "auto" (default): "manifest" when it applies, else "inpaint".
Compositing is a hard-mask paste by default (as ImageNet-9 does), or any train.enhance.blend mode.

The suite works at `work_size`: each image is centre-cropped to a square and resized to work_size (what
prepare_frame does first), so composites are made at the model's frame scale.

    results = run_suite(items, predict_fn, SuiteConfig())   # predict_fn(list of HxWx3 BGR) -> N x C probs
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from edge_runtime.errors import MgfenError
from edge_runtime.preprocess import read_image, square_frame
from train.enhance.blend import BLEND_MODES, replace_background

VARIANTS = ("original", "only_fg", "no_fg", "mixed_same", "mixed_rand", "mixed_next")
BACKGROUND_SOURCES = ("auto", "manifest", "inpaint")
_INPAINT_SIDE = 256

PredictFn = Callable[[Sequence[np.ndarray]], np.ndarray]  # list of HxWx3 uint8 BGR -> N x C float probs


class SuiteError(MgfenError):
    """Missing masks, an empty mask, too few items or classes, or an unusable background source."""


@dataclass(frozen=True)
class SuiteConfig:
    """work_size: side composites are made at. adversarial_m: backgrounds tried per item (0: skip).
    blend: compositing mode (train.enhance.blend.BLEND_MODES). background_source: see the module docstring.
    seed: pairs items with backgrounds reproducibly. batch: images per predict_fn call."""

    work_size: int = 768
    adversarial_m: int = 10
    blend: str = "hard"
    background_source: str = "auto"
    seed: int = 0
    batch: int = 16

    def __post_init__(self) -> None:
        if self.work_size < 32:
            raise SuiteError(f"work_size must be >= 32, got {self.work_size}")
        if self.adversarial_m < 0:
            raise SuiteError(f"adversarial M must be >= 0, got {self.adversarial_m}")
        if self.blend not in BLEND_MODES:
            raise SuiteError(f"unknown blend {self.blend!r}; expected one of {', '.join(BLEND_MODES)}")
        if self.background_source not in BACKGROUND_SOURCES:
            raise SuiteError(f"background source must be one of {', '.join(BACKGROUND_SOURCES)}")


@dataclass
class SuiteItem:
    """One test image at work size: image SxSx3 uint8 BGR, mask SxS bool, label index, manifest background."""

    path: str
    label: int
    image: np.ndarray
    mask: np.ndarray
    background_name: str | None = None


# ------------------------------------------------------------------------------------------ loading


def load_items(
    root: Path, samples: Sequence, work_size: int, masks_root: Path | None = None
) -> list[SuiteItem]:
    """SuiteItems for `samples` (objects with .path relative to root and .label), masks from
    masks_root (default root/masks) with the same relative path (.png tried too)."""
    root = Path(root)
    masks_root = Path(masks_root) if masks_root is not None else root / "masks"
    names = _manifest_backgrounds(root)
    items = []
    for s in samples:
        mpath = masks_root / s.path
        if not mpath.is_file():
            mpath = mpath.with_suffix(".png")
        if not mpath.is_file():
            raise SuiteError(
                f"{masks_root / s.path}: no foreground mask; the suite needs a mask per image "
                "(make them with `mgfen-data masks --ref IMG --ref-mask MASK --data DIR`)"
            )
        raw = cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE)
        if raw is None:
            raise SuiteError(f"{mpath}: unreadable mask")
        image = read_image(root / s.path)
        if raw.shape != image.shape[:2]:
            raise SuiteError(f"{mpath}: mask is {raw.shape[1]}x{raw.shape[0]} but the image is {image.shape[1]}x{image.shape[0]}")
        mask = square_frame(raw, work_size) >= 128
        if not mask.any():
            raise SuiteError(f"{mpath}: the mask is empty (no foreground)")
        items.append(SuiteItem(s.path, int(s.label), square_frame(image, work_size), mask, names.get(s.path)))
    return items


def _manifest_backgrounds(root: Path) -> dict[str, str]:
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {row["path"]: row["background"] for row in csv.DictReader(fh) if row.get("background")}


# -------------------------------------------------------------------------------------- backgrounds


def inpaint_background(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with its foreground removed: SxSx3 uint8 BGR. The hole (mask dilated by 2% of the side)
    is filled by Telea inpainting at 256 px, upsampled, and pasted into the hole only."""
    h, w = mask.shape
    grow = max(1, int(0.02 * min(h, w)))
    hole = cv2.dilate(mask.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
    small = cv2.resize(image, (_INPAINT_SIDE, _INPAINT_SIDE), interpolation=cv2.INTER_AREA)
    small_hole = cv2.resize(hole.astype(np.uint8) * 255, (_INPAINT_SIDE, _INPAINT_SIDE), interpolation=cv2.INTER_AREA) > 0
    filled = cv2.inpaint(small, small_hole.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(hole[..., None], up, image).astype(np.uint8)


def item_backgrounds(items: Sequence[SuiteItem], source: str, seed: int) -> tuple[list[np.ndarray], str]:
    """One background image per item (SxSx3 uint8 BGR) and the source actually used."""
    from train.enhance.backgrounds import FAMILIES, render_family

    if source in ("auto", "manifest"):
        usable = all(it.background_name in FAMILIES for it in items)
        if usable:
            out = []
            for i, it in enumerate(items):
                rng = np.random.default_rng([seed, 7, i])
                side = it.image.shape[0]
                out.append(render_family(it.background_name, rng, side, side))
            return out, "manifest"
        if source == "manifest":
            raise SuiteError(
                "--bg-source manifest needs manifest.csv naming a procedural family "
                f"({', '.join(FAMILIES)}) for every image; use --bg-source inpaint"
            )
    return [inpaint_background(it.image, it.mask) for it in items], "inpaint"


# ------------------------------------------------------------------------------------------- variants


def pair_indices(labels: Sequence[int], kind: str, rng: np.random.Generator, num_classes: int) -> list[int]:
    """For each item i, the index j != i whose background it gets: same class, random, or next class."""
    labels = np.asarray(labels)
    n = len(labels)
    out = []
    for i in range(n):
        if kind == "same":
            pool = np.flatnonzero((labels == labels[i]) & (np.arange(n) != i))
        elif kind == "rand":
            pool = np.flatnonzero(np.arange(n) != i)
        elif kind == "next":
            pool = np.flatnonzero(labels == (labels[i] + 1) % num_classes)
        else:
            raise ValueError(kind)
        if len(pool) == 0:
            raise SuiteError(f"no item to take a '{kind}' background from for item {i} (too few images per class)")
        out.append(int(pool[rng.integers(len(pool))]))
    return out


def build_variant(
    name: str, items: Sequence[SuiteItem], backgrounds: Sequence[np.ndarray], blend: str, seed: int, num_classes: int
) -> tuple[list[np.ndarray], list[int | None]]:
    """The images of one variant (SxSx3 uint8 BGR each) and, for mixed variants, the background donor."""
    if name == "original":
        return [it.image for it in items], [None] * len(items)
    if name == "only_fg":
        return [np.where(it.mask[..., None], it.image, 0).astype(np.uint8) for it in items], [None] * len(items)
    if name == "no_fg":
        out = []
        for it in items:
            grow = max(1, int(0.01 * it.mask.shape[0]))
            hole = cv2.dilate(it.mask.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0
            out.append(np.where(hole[..., None], 0, it.image).astype(np.uint8))
        return out, [None] * len(items)
    kinds = {"mixed_same": "same", "mixed_rand": "rand", "mixed_next": "next"}
    if name not in kinds:
        raise SuiteError(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}")
    rng = np.random.default_rng([seed, VARIANTS.index(name)])
    donors = pair_indices([it.label for it in items], kinds[name], rng, num_classes)
    images = [replace_background(it.image, it.mask, backgrounds[j], blend) for it, j in zip(items, donors)]
    return images, donors


def _predict(predict_fn: PredictFn, images: Sequence[np.ndarray], batch: int) -> np.ndarray:
    probs = [np.asarray(predict_fn(images[i : i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(probs, axis=0)


def box_foreground_share(boxes: np.ndarray, masks: Sequence[np.ndarray]) -> float:
    """Mean share of a part box's area that lies on the item: boxes N x K x 4 normalised x1,y1,x2,y2;
    masks N arrays S x S bool (the frames the boxes were found on). 1.0 = every box fully on the item."""
    shares = []
    for item_boxes, mask in zip(boxes, masks):
        side = mask.shape[0]
        for x1, y1, x2, y2 in np.clip(np.round(np.asarray(item_boxes) * side), 0, side).astype(int):
            window = mask[y1:y2, x1:x2]
            shares.append(float(window.mean()) if window.size else 0.0)
    if not shares:
        raise SuiteError("no boxes to score")
    return float(np.mean(shares))


def run_suite(
    items: Sequence[SuiteItem],
    predict_fn: PredictFn,
    config: SuiteConfig,
    num_classes: int,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Accuracy of every variant, BG-Gap and adversarial-background accuracy. Returns a JSON-able dict:
    {"variants": {name: {"accuracy", "n"}}, "bg_gap", "adversarial": {"m", "accuracy", "fooled_rate"},
    "background_source", "config"} (accuracies as fractions in [0, 1])."""
    if len(items) < 2:
        raise SuiteError("the background suite needs at least two images")
    labels = np.array([it.label for it in items])
    present = set(labels.tolist())
    if len(present) < 2:
        raise SuiteError("the background suite needs images of at least two classes (mixed_next)")
    backgrounds, source = item_backgrounds(items, config.background_source, config.seed)
    result: dict = {"variants": {}, "background_source": source, "config": asdict(config), "n": len(items)}
    preds_original = None
    for name in VARIANTS:
        if progress:
            progress(name)
        images, _ = build_variant(name, items, backgrounds, config.blend, config.seed, num_classes)
        pred = _predict(predict_fn, images, config.batch).argmax(axis=1)
        if name == "original":
            preds_original = pred
        result["variants"][name] = {"accuracy": float(np.mean(pred == labels)), "n": len(items)}
    v = result["variants"]
    result["bg_gap"] = v["mixed_same"]["accuracy"] - v["mixed_rand"]["accuracy"]

    m = min(config.adversarial_m, len(items) - 1)
    if m > 0:
        if progress:
            progress(f"adversarial x{m}")
        rng = np.random.default_rng([config.seed, 99])
        fooled = np.zeros(len(items), bool)
        flipped = np.zeros(len(items), bool)
        for i, it in enumerate(items):
            others = np.array([j for j in range(len(items)) if j != i])
            donors = rng.choice(others, size=m, replace=False)
            images = [replace_background(it.image, it.mask, backgrounds[j], config.blend) for j in donors]
            pred = _predict(predict_fn, images, config.batch).argmax(axis=1)
            fooled[i] = bool(np.any(pred != it.label))
            flipped[i] = bool(np.any(pred != preds_original[i]))
        result["adversarial"] = {
            "m": m,
            "accuracy": float(np.mean(~fooled)),
            "fooled_rate": float(np.mean(fooled[preds_original == labels])) if np.any(preds_original == labels) else None,
            "flip_rate": float(np.mean(flipped)),
        }
    return result


def variant_sheet(items: Sequence[SuiteItem], config: SuiteConfig, num_classes: int, rows: int = 4, thumb: int = 160) -> np.ndarray:
    """A picture of the variants for the first `rows` items: one row per item, one column per variant."""
    # a few items of every class are enough for a picture (and keep same/next pairing possible)
    per_class: dict[int, list[SuiteItem]] = {}
    for it in items:
        if len(per_class.setdefault(it.label, [])) < max(2, rows):
            per_class[it.label].append(it)
    items = [it for group in zip(*per_class.values()) for it in group] if len(per_class) > 1 else list(items)
    backgrounds, _ = item_backgrounds(items, config.background_source, config.seed)
    cols = [build_variant(name, items, backgrounds, config.blend, config.seed, num_classes)[0] for name in VARIANTS]
    header = np.full((24, thumb * len(VARIANTS), 3), 255, np.uint8)
    for c, name in enumerate(VARIANTS):
        cv2.putText(header, name, (c * thumb + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    lines = [header]
    for r in range(min(rows, len(items))):
        lines.append(np.hstack([cv2.resize(col[r], (thumb, thumb), interpolation=cv2.INTER_AREA) for col in cols]))
    return np.vstack(lines)


def format_results(result: dict) -> str:
    """A small markdown table of a run_suite result (accuracies in percent)."""
    lines = ["| variant | accuracy |", "|---|---|"]
    for name, v in result["variants"].items():
        lines.append(f"| {name} | {100 * v['accuracy']:.1f}% |")
    lines.append(f"| **BG-Gap** (mixed_same - mixed_rand) | {100 * result['bg_gap']:+.1f} pt |")
    adv = result.get("adversarial")
    if adv:
        lines.append(f"| adversarial background (M={adv['m']}) | {100 * adv['accuracy']:.1f}% |")
    if "boxes_on_item" in result:
        lines.append(f"| part-box area on the item (original) | {100 * result['boxes_on_item']:.1f}% |")
    return "\n".join(lines)
