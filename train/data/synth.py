"""The embedded default dataset: procedural macro-lens photos of one printed tag, genuine or counterfeit.

Every frame shows the same tag template (header, logo, colour blocks, barcode, layout) at a random pose on
a random background, with a lighting gradient and sensor noise. Genuine and counterfeit differ only in three
micro features, each driven by `k = strength * label` (label 1 = counterfeit) so that at strength 0 both
classes run exactly the same code with the same random numbers:

- halftone patch: dot position jitter, irregular dot gain, ragged dot edges, dots that fail to adhere;
- foil-stamped emblem: edge blur and leakage specks just outside the edge;
- micro-text: thickened and broken strokes.

Micro sizes are in frame pixels (dot pitch about 4 px at scale 1), so at 1024 px they survive in a 224 px
crop of the full frame and mostly vanish when the whole frame is downscaled to 448 px.

Randomness: the item's print (per group) comes from SeedSequence([seed, 1, group]); pose, background,
lighting and noise of one shot from SeedSequence([seed, 2, index]); background choice from
SeedSequence([seed, 3, index]); the plan (groups, splits, background halves) from SeedSequence([seed, 0]).
The number of worker processes therefore never changes a byte. The tag and its micro features are drawn by
train/data/synth_tag.py; this module poses it on a background, plans the dataset and writes it.
"""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from edge_runtime.names import CLASS_NAMES
from train.data.synth_config import SynthConfig, SynthError
from train.data.synth_tag import render_tag, spawn_streams, stream_rng
from train.enhance.backgrounds import BackgroundLibrary

GENERATOR = "mgfen-synth"
GENERATOR_VERSION = "1.0"
SPLITS = ("train", "val", "test")
REGION_NAMES = ("halftone", "foil", "microtext")
MANIFEST_COLUMNS = ("path", "split", "label", "group", "background")
SHOTS = (2, 3)  # photos per item


@dataclass(frozen=True)
class PlannedImage:
    """One frame of the plan: where it goes and what it shows."""

    index: int
    group: int
    shot: int
    label: int  # index into CLASS_NAMES
    split: str
    background: str

    @property
    def path(self) -> str:
        return f"{self.split}/{CLASS_NAMES[self.label]}/item{self.group:04d}_{self.shot}.png"


# ------------------------------------------------------------------------------------------- one frame
def _label_index(label: int | str) -> int:
    if isinstance(label, str):
        if label not in CLASS_NAMES:
            raise SynthError(f"unknown label {label!r}; expected one of {CLASS_NAMES}")
        return CLASS_NAMES.index(label)
    if label not in (0, 1):
        raise SynthError(f"label must be 0 (genuine) or 1 (counterfeit), got {label}")
    return int(label)


def render_sample(
    config: SynthConfig,
    index: int,
    label: int | str,
    background: np.ndarray | str | None = None,
    *,
    group: int | None = None,
    library: BackgroundLibrary | None = None,
    draw_tag: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render frame `index` of item `group` (default: index) with class `label`.

    background: an SxSx3 uint8 BGR array, a library name, or None (a random library background).
    draw_tag=False renders the same frame without the tag (same background, lighting and noise).
    Returns (image SxSx3 uint8 BGR, mask SxS uint8 with 255 = tag, info dict with pose, background name and
    `regions`: {halftone|foil|microtext: 4x2 list of (x, y) frame-pixel corners}).
    """
    lab = _label_index(label)
    grp = index if group is None else group
    s = config.size
    r_pose, r_bg, r_light, r_noise = spawn_streams(config.seed, 2, index, 4)
    scale = float(r_pose.uniform(*config.scale_range))
    angle = float(r_pose.uniform(-config.max_rotation, config.max_rotation))
    k = config.strength * lab

    if isinstance(background, np.ndarray):
        if background.shape != (s, s, 3) or background.dtype != np.uint8:
            raise SynthError(f"background must be {s}x{s}x3 uint8, got {background.shape} {background.dtype}")
        bg, bg_name = background, "array"
    else:
        lib = library if library is not None else BackgroundLibrary(config.backgrounds, () if config.backgrounds else config.families)
        if background is None:
            bg, bg_name = lib.sample(r_bg, s, s)
        else:
            bg, bg_name = lib.render(background, r_bg, s, s), background
    frame = bg.astype(np.float32)

    tag, alpha, regions_t = render_tag(config, grp, k, scale)
    ht, wt = alpha.shape
    m = cv2.getRotationMatrix2D((wt / 2.0, ht / 2.0), angle, 1.0)
    # bounding box of the rotated tag, then a random position that keeps it inside the frame
    corners = np.array([[0, 0], [wt, 0], [wt, ht], [0, ht]], np.float64)
    rc = corners @ m[:, :2].T
    half_w = (rc[:, 0].max() - rc[:, 0].min()) / 2.0
    half_h = (rc[:, 1].max() - rc[:, 1].min()) / 2.0
    pad = 0.02 * s
    lo_x, hi_x = half_w + pad, s - half_w - pad
    lo_y, hi_y = half_h + pad, s - half_h - pad
    cx = float(r_pose.uniform(lo_x, hi_x)) if hi_x > lo_x else s / 2.0
    cy = float(r_pose.uniform(lo_y, hi_y)) if hi_y > lo_y else s / 2.0
    m[:, 2] += (cx - wt / 2.0, cy - ht / 2.0)

    if draw_tag:
        # warp only into the tag's bounding box: same pixels as a full-frame warp, far less work
        bx0, by0 = max(0, int(np.floor(cx - half_w)) - 2), max(0, int(np.floor(cy - half_h)) - 2)
        bx1, by1 = min(s, int(np.ceil(cx + half_w)) + 2), min(s, int(np.ceil(cy + half_h)) + 2)
        mb = m.copy()
        mb[:, 2] -= (bx0, by0)
        rgba = np.concatenate([tag * alpha[..., None], alpha[..., None]], axis=2)
        warped = cv2.warpAffine(rgba, mb, (bx1 - bx0, by1 - by0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        a = warped[..., 3:4]
        frame[by0:by1, bx0:bx1] = frame[by0:by1, bx0:bx1] * (1.0 - a) + warped[..., :3]
        mask = np.zeros((s, s), np.uint8)
        mask[by0:by1, bx0:bx1] = np.where(warped[..., 3] >= 0.5, 255, 0).astype(np.uint8)
    else:
        mask = np.zeros((s, s), np.uint8)

    # lighting: a linear gradient, a vignette and a white-balance tint, smooth so computed coarse
    g = 32
    yy, xx = np.mgrid[0:g, 0:g].astype(np.float32) / (g - 1) - 0.5
    ga = r_light.uniform(0, 2 * np.pi)
    strength_grad = r_light.uniform(0.1, 0.35)
    vig = r_light.uniform(0.0, 0.5)
    light = r_light.uniform(0.85, 1.1) * (1.0 + strength_grad * (xx * np.cos(ga) + yy * np.sin(ga))) * (1.0 - vig * (xx**2 + yy**2))
    light = cv2.resize(light.astype(np.float32), (s, s), interpolation=cv2.INTER_LINEAR)
    tint = r_light.uniform(0.94, 1.06, 3).astype(np.float32)
    frame *= light[..., None] * tint
    if config.lens_blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), sigmaX=config.lens_blur)
    # sensor noise: read noise plus a shot-noise term growing with the signal
    sd = np.clip(frame, 0, 255)
    sd *= np.float32(1.0 / 255.0)
    sd += np.float32(0.5)
    np.sqrt(sd, out=sd)
    sd *= r_noise.standard_normal((s, s, 3), dtype=np.float32)
    sd *= np.float32(config.noise_sigma)
    frame += sd
    frame += np.float32(0.5)
    image = np.clip(frame, 0, 255).astype(np.uint8)

    regions = {name: (np.c_[box, np.ones(4)] @ m.T).round(2).tolist() for name, box in regions_t.items()}
    info = {
        "index": index,
        "group": grp,
        "label": CLASS_NAMES[lab],
        "background": bg_name,
        "scale": round(scale, 4),
        "angle": round(angle, 3),
        "center": [round(cx, 2), round(cy, 2)],
        "regions": regions,
    }
    return image, mask, info


def region_mask(info: dict, size: int, names: Sequence[str] = REGION_NAMES, grow: int = 0) -> np.ndarray:
    """SxS uint8 mask (255 inside) of the micro-feature regions in `info`, dilated by `grow` px."""
    out = np.zeros((size, size), np.uint8)
    for name in names:
        cv2.fillPoly(out, [np.round(np.array(info["regions"][name])).astype(np.int32)], 255)
    if grow > 0:
        out = cv2.dilate(out, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
    return out


# -------------------------------------------------------------------------------------------- the plan
def _group_sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Split n images into items of 2 or 3 shots each."""
    sizes: list[int] = []
    rem = n
    while rem > 0:
        if rem in SHOTS:
            sizes.append(rem)
            break
        if rem == 1:  # fold the last one into the previous item, keeping 2..3 shots
            if sizes[-1] == 3:
                sizes[-1] = 2
                sizes.append(2)
            else:
                sizes[-1] = 3
            break
        k = int(rng.integers(SHOTS[0], SHOTS[1] + 1))
        sizes.append(k)
        rem -= k
    return sizes


def background_halves(config: SynthConfig, names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The background names of each class's half (genuine, counterfeit), a seeded split of `names`."""
    if len(names) < 2:
        raise SynthError("at least two backgrounds (families or photos) are needed, one half per class")
    perm = stream_rng(config.seed, 0, 1).permutation(len(names))
    half = len(names) // 2
    return tuple(sorted(names[i] for i in perm[:half])), tuple(sorted(names[i] for i in perm[half:]))


def plan_dataset(config: SynthConfig, background_names: Sequence[str]) -> tuple[list[PlannedImage], tuple[tuple[str, ...], tuple[str, ...]]]:
    """Items, shots, labels, splits and backgrounds of every frame, without rendering anything.

    Labels are balanced by image (n // 2 genuine); items are split 7:2:1 per class, so no item crosses splits.
    The train split draws its background from its class's half with probability bias; val and test with 0.5.
    """
    rng = stream_rng(config.seed, 0, 0)
    halves = background_halves(config, background_names)
    items: list[tuple[int, int]] = []  # (label, shots)
    for lab, n_lab in enumerate((config.n // 2, config.n - config.n // 2)):
        items += [(lab, k) for k in _group_sizes(rng, n_lab)]
    order = rng.permutation(len(items))  # item ids carry no class information
    split_of: dict[int, str] = {}
    for lab in (0, 1):
        ids = [int(g) for g in np.flatnonzero([items[o][0] == lab for o in order])]
        ids = [ids[i] for i in rng.permutation(len(ids))]
        n_test = max(1, int(round(config.split[2] * len(ids))))
        n_val = max(1, int(round(config.split[1] * len(ids))))
        if len(ids) - n_test - n_val < 1:
            raise SynthError(f"--n {config.n} is too small to fill train, val and test with both classes")
        for j, g in enumerate(ids):
            split_of[g] = "train" if j < len(ids) - n_val - n_test else ("val" if j < len(ids) - n_test else "test")
    plan: list[PlannedImage] = []
    for g, o in enumerate(order):
        lab, shots = items[o]
        split = split_of[g]
        for shot in range(shots):
            idx = len(plan)
            r = stream_rng(config.seed, 3, idx)
            own = r.random() < (config.bias if split == "train" else 0.5)
            half = halves[lab] if own else halves[1 - lab]
            plan.append(PlannedImage(idx, g, shot, lab, split, half[int(r.integers(len(half)))]))
    return plan, halves


def measured_bias(plan: Sequence[PlannedImage], halves: tuple[tuple[str, ...], tuple[str, ...]], split: str) -> float:
    """Fraction of the split's frames whose background is in their own class's half."""
    rows = [p for p in plan if p.split == split]
    if not rows:
        return float("nan")
    return sum(p.background in halves[p.label] for p in rows) / len(rows)


# ------------------------------------------------------------------------------------------ generation
_WORKER: dict = {}


def _init_worker(config: SynthConfig, out: str) -> None:
    cv2.setNumThreads(1)
    _WORKER["config"] = config
    _WORKER["out"] = Path(out)
    _WORKER["library"] = BackgroundLibrary(config.backgrounds, () if config.backgrounds else config.families)


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise SynthError("PNG encoding failed")
    return buf.tobytes()


def _render_and_write(p: PlannedImage) -> tuple[str, dict]:
    config: SynthConfig = _WORKER["config"]
    out: Path = _WORKER["out"]
    image, mask, info = render_sample(config, p.index, p.label, p.background, group=p.group, library=_WORKER["library"])
    (out / p.path).write_bytes(_png(image))
    (out / "masks" / p.path).write_bytes(_png(mask))
    return p.path, info["regions"]


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(f"--out {out} is not empty; pass --overwrite to replace an earlier synth output there")
        card = out / "card.json"
        try:
            ok = json.loads(card.read_text()).get("generator") == GENERATOR
        except (OSError, ValueError, AttributeError):
            ok = False
        if not ok:
            raise SynthError(f"refusing to overwrite {out}: it is not an mgfen-data synth output (no card.json from {GENERATOR})")
        for sub in (*SPLITS, "masks"):
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("manifest.csv", "card.json", "regions.json"):
            (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        for cls in CLASS_NAMES:
            (out / split / cls).mkdir(parents=True, exist_ok=True)
            (out / "masks" / split / cls).mkdir(parents=True, exist_ok=True)


def generate_dataset(
    out: Path,
    config: SynthConfig,
    *,
    workers: int = 2,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Write the dataset to `out` (layout in design.md) and return a JSON-able summary.

    Files: {split}/{class}/itemGGGG_S.png (SxSx3 BGR PNG), masks/<same path> (SxS uint8 PNG, 255 = tag),
    manifest.csv (path,split,label,group,background; sorted by path), card.json (every parameter, the
    generator version, background halves, counts), regions.json (path -> micro-feature corners in px).
    `progress(n_done)` is called after each frame.
    """
    out = Path(out)
    if workers < 1:
        raise SynthError(f"--workers must be >= 1, got {workers}")
    library = BackgroundLibrary(config.backgrounds, () if config.backgrounds else config.families)
    plan, halves = plan_dataset(config, library.names)
    _prepare_out(out, overwrite)
    t0 = time.perf_counter()
    regions: dict[str, dict] = {}
    if workers == 1:
        _init_worker(config, str(out))
        _WORKER["library"] = library
        results: Iterator[tuple[str, dict]] = map(_render_and_write, plan)
        for path, reg in results:
            regions[path] = reg
            if progress:
                progress(1)
        _WORKER.clear()
    else:
        ctx = mp.get_context("spawn")  # safe even when the caller has torch threads running
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config, str(out))) as pool:
            for path, reg in pool.imap(_render_and_write, plan, chunksize=2):
                regions[path] = reg
                if progress:
                    progress(1)
    seconds = time.perf_counter() - t0

    rows = sorted(plan, key=lambda p: p.path)
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for p in rows:
            w.writerow([p.path, p.split, CLASS_NAMES[p.label], f"item{p.group:04d}", p.background])
    counts = {sp: {c: sum(1 for p in plan if p.split == sp and CLASS_NAMES[p.label] == c) for c in CLASS_NAMES} for sp in SPLITS}
    bias = {sp: round(measured_bias(plan, halves, sp), 4) for sp in SPLITS}
    card = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "classes": list(CLASS_NAMES),
        "config": asdict(config),
        "background_halves": {CLASS_NAMES[0]: list(halves[0]), CLASS_NAMES[1]: list(halves[1])},
        "images": len(plan),
        "groups": len({p.group for p in plan}),
        "counts": counts,
        "measured_bias": bias,
        "random_streams": "plan SeedSequence([seed,0,*]); item print [seed,1,group]; shot [seed,2,index]; background choice [seed,3,index]",
    }
    (out / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (out / "regions.json").write_text(json.dumps({k: regions[k] for k in sorted(regions)}, sort_keys=True) + "\n")
    return {
        "out": str(out),
        "images": len(plan),
        "groups": card["groups"],
        "counts": counts,
        "measured_bias": bias,
        "seconds": round(seconds, 3),
        "frames_per_s": round(len(plan) / seconds, 2) if seconds > 0 else None,
    }
