"""Click commands for background work, added to the `mgfen-data` group (`masks`, `augment`), and the
function `mgfen-eval --bg-suite` calls (`bg_suite_report`). A thin layer over train.foreground,
train.augment and train.bg_suite.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Sequence

import click
import cv2
import numpy as np

from edge_runtime.cli_errors import OutputPath, error_boundary
from edge_runtime.errors import MgfenError
from train.blend import BLEND_MODES

_THUMB = 200


# -------------------------------------------------------------------------------------------- masks


def mask_overlay(image: np.ndarray, mask: np.ndarray, text: str, thumb: int = _THUMB) -> np.ndarray:
    """A thumb x thumb BGR tile: the image with the mask tinted green, its outline red, and a caption."""
    h, w = image.shape[:2]
    s = thumb / max(h, w)
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    m = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) >= 128
    tinted = small.copy()
    tinted[m] = (0.55 * small[m] + 0.45 * np.array([0, 255, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tinted, contours, -1, (0, 0, 255), 1)
    tile = np.zeros((thumb, thumb, 3), np.uint8)
    tile[: size[1], : size[0]] = tinted
    cv2.rectangle(tile, (0, thumb - 18), (thumb, thumb), (0, 0, 0), -1)
    cv2.putText(tile, text, (3, thumb - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def contact_sheet(tiles: Sequence[np.ndarray], columns: int = 8) -> np.ndarray:
    """Tiles (equal size, HxWx3 uint8) in a grid, row by row; empty cells are grey."""
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.full((rows * th, columns * tw, 3), 64, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = t
    return sheet


def make_masks(
    references: Sequence[tuple[np.ndarray, np.ndarray]],
    data: Path,
    out: Path,
    *,
    overwrite: bool = False,
    sheet_max: int = 64,
    config=None,
    progress=None,
) -> dict:
    """Segment every image of `data` (split/class layout or class folders) from the reference pairs.

    Writes out/<relative path as .png> (HxW uint8 {0,255}), out/confidence.csv (path, confidence,
    area_fraction) and out/contact_sheet.jpg (the `sheet_max` least confident images first). Existing mask
    files are kept unless `overwrite`. Returns a JSON-able summary.
    """
    from edge_runtime.preprocess import list_images, read_image
    from train.foreground import ForegroundConfig, ForegroundExtractor

    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise MgfenError(f"{data}: data folder not found")
    images = [p for p in list_images(data) if p.relative_to(data).parts[0] != "masks" and not _inside(p, out)]
    if not images:
        raise MgfenError(f"{data}: no images found")
    fg = ForegroundExtractor(config or ForegroundConfig()).fit(references)
    rows, tiles, skipped = [], [], 0
    t0 = time.perf_counter()
    for p in images:
        rel = p.relative_to(data).with_suffix(".png")
        target = out / rel
        if target.exists() and not overwrite:
            skipped += 1
            if progress:
                progress(1)
            continue
        image = read_image(p)
        res = fg.segment(image)
        target.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".png", res.mask)
        if not ok:
            raise MgfenError(f"{target}: PNG encoding failed")
        target.write_bytes(buf.tobytes())
        area = float((res.mask >= 128).mean())
        rows.append((rel.as_posix(), res.confidence, area))
        tiles.append((res.confidence, mask_overlay(image, res.mask, f"{res.confidence:.2f} {rel.name}")))
        if progress:
            progress(1)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "confidence.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(("path", "confidence", "area_fraction"))
        w.writerows((r, f"{c:.4f}", f"{a:.4f}") for r, c, a in sorted(rows))
    sheet_path = None
    if tiles:
        tiles.sort(key=lambda t: t[0])
        sheet_path = out / "contact_sheet.jpg"
        cv2.imwrite(str(sheet_path), contact_sheet([t for _, t in tiles[:sheet_max]]), [cv2.IMWRITE_JPEG_QUALITY, 88])
    conf = np.array([c for _, c, _ in rows]) if rows else np.zeros(0)
    return {
        "data": str(data),
        "out": str(out),
        "written": len(rows),
        "kept_existing": skipped,
        "reference_iou": round(fg.reference_iou, 4),
        "confidence_mean": round(float(conf.mean()), 4) if len(conf) else None,
        "confidence_min": round(float(conf.min()), 4) if len(conf) else None,
        "lowest": [r for r, _, _ in sorted(rows, key=lambda r: r[1])[:5]],
        "contact_sheet": str(sheet_path) if sheet_path else None,
        "seconds": round(seconds, 2),
    }


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


MASKS_EXAMPLES = """
\b
Examples:
  mgfen-data masks --ref ref.jpg --ref-mask ref_mask.png --data photos/
  mgfen-data masks --ref a.jpg --ref-mask a.png --ref b.jpg --ref-mask b.png --data photos/ --overwrite
  mgfen-data masks --ref ref.jpg --ref-box 120,80,560,400 --data photos/      # GrabCut inside the box makes the mask
"""


@click.command("masks", epilog=MASKS_EXAMPLES)
@click.option("--ref", "refs", multiple=True, required=True, type=click.Path(path_type=Path), help="Reference image (repeatable).")
@click.option("--ref-mask", "ref_masks", multiple=True, type=click.Path(path_type=Path), help="Its foreground mask (8-bit, same size; one per --ref).")
@click.option("--ref-box", "ref_boxes", multiple=True, help="Instead of --ref-mask: X,Y,W,H box around the object in the reference's pixels (one per --ref); GrabCut inside it makes the reference mask.")
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path), help="Dataset folder to segment.")
@click.option("--out", type=OutputPath(folder=True), default=None, help="Masks folder (default DATA/masks, the dataset layout).")
@click.option("--overwrite", is_flag=True, help="Replace mask files that already exist.")
@click.option("--sheet-max", type=click.IntRange(1, 1000), default=64, show_default=True, help="Tiles in the contact sheet (least confident first).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch CPU threads.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@error_boundary
def masks_cmd(refs, ref_masks, ref_boxes, data: Path, out: Path | None, overwrite: bool, sheet_max: int,
              threads: int, as_json: bool) -> None:
    """One-shot foreground masks from one or a few reference images with masks or boxes (no SAM).

    Writes DATA/masks/<same relative path>.png, DATA/masks/confidence.csv (a per-image confidence in
    [0, 1]) and DATA/masks/contact_sheet.jpg (overlays, least confident first) to check by eye.
    """
    import torch
    from tqdm import tqdm

    from edge_runtime.preprocess import list_images
    from train.foreground import load_references

    torch.set_num_threads(threads)
    pairs = load_references(list(refs), list(ref_masks), list(ref_boxes))
    target = out if out is not None else data / "masks"
    total = len(list_images(data)) if data.is_dir() else 0
    with tqdm(total=total, desc="masks", unit="img", disable=as_json) as bar:
        summary = make_masks(pairs, data, target, overwrite=overwrite, sheet_max=sheet_max, progress=bar.update)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"wrote {summary['written']} masks to {summary['out']} ({summary['kept_existing']} kept), "
               f"confidence mean {summary['confidence_mean']} min {summary['confidence_min']}")
    if summary["contact_sheet"]:
        click.echo(f"check by eye: {summary['contact_sheet']} (least confident first)")


# ------------------------------------------------------------------------------------------- augment

AUGMENT_EXAMPLES = """
\b
Examples:
  mgfen-data augment --data runs/data --out runs/data_bg --copies 4
  mgfen-data augment --data photos --out photos_bg --backgrounds ~/bg_photos --copies 2 --blend poisson
"""


@click.command("augment", epilog=AUGMENT_EXAMPLES)
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path), help="Dataset folder with masks/.")
@click.option("--out", required=True, type=OutputPath(folder=True), help="Output dataset folder.")
@click.option("--backgrounds", type=click.Path(path_type=Path), default=None, help="Folder of background photos (recursive). Default: procedural families.")
@click.option("--families/--no-families", default=None, help="Also use the procedural families (default: only when no --backgrounds).")
@click.option("--copies", type=click.IntRange(1, 1000), default=4, show_default=True, help="Background-replaced copies per image.")
@click.option("--blend", type=click.Choice(BLEND_MODES), default="alpha", show_default=True)
@click.option("--splits", default="train", show_default=True, help="Comma-separated splits that get copies.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an earlier augment output in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@error_boundary
def augment_cmd(data: Path, out: Path, backgrounds: Path | None, families: bool | None, copies: int,
                blend: str, splits: str, seed: int, overwrite: bool, as_json: bool) -> None:
    """Write background-replaced copies of a dataset (same layout, masks, manifest.csv with a background column)."""
    from tqdm import tqdm

    from train.augment import OfflineAugmentConfig, augment_dataset

    library = make_library(backgrounds, families)
    cfg = OfflineAugmentConfig(copies=copies, blend=blend, splits=tuple(s.strip() for s in splits.split(",") if s.strip()), seed=seed)
    with tqdm(desc="augment", unit="img", disable=as_json) as bar:
        summary = augment_dataset(data, out, library, cfg, overwrite=overwrite, progress=bar.update)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"wrote {summary['originals']} originals + {summary['copies']} copies to {summary['out']}")


def make_library(backgrounds: Path | None, families: bool | None):
    """A BackgroundLibrary: the photo folder and/or the procedural families (families default: only
    when no folder is given). An empty folder raises BackgroundError."""
    from train.backgrounds import FAMILIES, BackgroundLibrary

    use_families = families if families is not None else backgrounds is None
    return BackgroundLibrary(backgrounds, FAMILIES if use_families else ())


def background_replacer(p: float, backgrounds: str | Path | None, blend: str, families: bool | None = None):
    """The training transform for `mgfen-train --bg-replace P --backgrounds DIR --blend MODE` (None when p == 0).
    An empty or missing background folder raises BackgroundError before any training time is spent."""
    from train.blend import BackgroundReplacer

    if p <= 0:
        return None
    return BackgroundReplacer(make_library(Path(backgrounds) if backgrounds else None, families), p=p, mode=blend)


# Options `mgfen-train` adds for online background replacement (defined once here, applied as a decorator).
# The defaults come from the caller (train.trainer.TrainConfig), the one place they are set.
def bg_train_options(bg_replace: float, blend: str, fg_prior: float):
    options = [
        click.option("--bg-replace", type=click.FloatRange(0.0, 1.0), default=bg_replace, show_default=True, help="Probability of replacing a training frame's background with one from the library (MGFEN's micro-grained feature enhancement; needs DATA/masks, see `mgfen-data masks`; without them it is OFF, as the summary says; 0 = off)."),
        click.option("--backgrounds", type=click.Path(file_okay=False), default=None, help="Folder of background photos (recursive). Default: the procedural families."),
        click.option("--blend", type=click.Choice(BLEND_MODES), default=blend, show_default=True, help="How the foreground is pasted on the new background."),
        click.option("--fg-prior", type=click.FloatRange(min=0.0), default=fg_prior, show_default=True, help="Weight of the heatmap foreground prior: part boxes are kept off the background (uses DATA/masks; without them it is OFF; 0 = off)."),
    ]

    def apply(func):
        for opt in reversed(options):
            func = opt(func)
        return func

    return apply


# ------------------------------------------------------------------------------------------ bg suite


def checkpoint_predictor(ckpt: Path, device: str = "cpu"):
    """(predict_fn, model, info): predict_fn(list of HxWx3 uint8 BGR) -> N x C softmax probabilities of the
    checkpoint's voted logits, through the runtime preprocessing (prepare_frame, global_input)."""
    import torch

    from edge_runtime.preprocess import global_input, prepare_frame
    from train.checkpoint import load_checkpoint
    from train.evaluate import resolve_device

    dev = resolve_device(device)
    model, info = load_checkpoint(ckpt, map_location="cpu")
    model.to(dev).eval()
    pre = model.cfg.preprocess

    import os
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max(1, min(8, (os.cpu_count() or 2) // 2)))  # OpenCV releases the GIL

    @torch.no_grad()
    def predict_fn(images: Sequence[np.ndarray]) -> np.ndarray:
        frames = list(pool.map(lambda b: prepare_frame(b, pre), images))
        image = torch.from_numpy(np.concatenate([global_input(f, pre) for f in frames])).to(dev)
        frame = torch.from_numpy(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2))).to(dev).float().div_(255.0)
        return model(image, frame)["logits"].float().softmax(1).cpu().numpy()

    return predict_fn, model, info


def predict_boxes(model, images: Sequence[np.ndarray], batch: int = 8) -> np.ndarray:
    """The part boxes a checkpoint's model picks on each image: N x K x 4 normalised x1,y1,x2,y2 float32
    (images HxWx3 uint8 BGR, through the runtime preprocessing)."""
    import torch

    from edge_runtime.preprocess import global_input, prepare_frame

    pre = model.cfg.preprocess
    dev = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            image = np.concatenate([global_input(prepare_frame(b, pre), pre) for b in images[i:i + batch]])
            out.append(model.global_forward(torch.from_numpy(image).to(dev))[2].float().cpu().numpy())
    return np.concatenate(out)


def bg_suite_report(
    ckpt: Path,
    data: Path,
    split: str = "test",
    out: Path | None = None,
    device: str = "cpu",
    batch: int = 8,
    adversarial_m: int = 10,
    blend: str = "hard",
    background_source: str = "auto",
    masks: Path | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Background-reliance suite of a checkpoint on one split (train.bg_suite). With `out`, writes
    bg_suite.json, bg_suite.md and bg_variants.png there. Returns the result dict."""
    from train.bg_suite import SuiteConfig, box_foreground_share, format_results, load_items, run_suite, variant_sheet
    from train.data import select_split

    predict_fn, model, info = checkpoint_predictor(ckpt, device)
    classes = list(info["classes"])
    index, samples = select_split(data, split, classes, seed)
    cfg = SuiteConfig(work_size=model.cfg.preprocess.frame_size, adversarial_m=adversarial_m, blend=blend,
                      background_source=background_source, seed=seed, batch=batch)
    items = load_items(index.root, samples, cfg.work_size, masks)
    say = (lambda s: click.echo(f"bg-suite: {s}", err=True)) if progress else None
    result = run_suite(items, predict_fn, cfg, len(classes), progress=say)
    if model.cfg.use_parts:
        boxes = predict_boxes(model, [it.image for it in items], batch)
        result["boxes_on_item"] = box_foreground_share(boxes, [it.mask for it in items])
    result.update({"checkpoint": str(ckpt), "data": str(data), "split": split, "classes": classes})
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bg_suite.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "bg_suite.md").write_text(format_results(result) + "\n")
        cv2.imwrite(str(out / "bg_variants.png"), variant_sheet(items, cfg, len(classes)))
    return result


# Options `mgfen-eval` adds for the suite (applied as a decorator, so the flags are defined once here).
def bg_suite_options(func):
    options = [
        click.option("--bg-suite", is_flag=True, help="Background-reliance suite: original, only_fg, no_fg, mixed_same/rand/next, BG-Gap, adversarial backgrounds (needs DATA/masks)."),
        click.option("--bg-m", type=click.IntRange(0, 1000), default=10, show_default=True, help="Adversarial backgrounds tried per image."),
        click.option("--bg-blend", type=click.Choice(BLEND_MODES), default="hard", show_default=True, help="Compositing of the suite's mixed variants."),
        click.option("--bg-source", type=click.Choice(["auto", "manifest", "inpaint"]), default="auto", show_default=True, help="Where an image's background comes from (see train.bg_suite)."),
        click.option("--masks", "masks_dir", type=click.Path(file_okay=False), default=None, help="Masks folder (default DATA/masks)."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def print_bg_suite(result: dict) -> None:
    """Human-readable lines of a bg_suite_report result."""
    from train.bg_suite import format_results

    click.echo(f"background suite on {result['split']} (n {result['n']}, backgrounds: {result['background_source']})")
    click.echo(format_results(result))
