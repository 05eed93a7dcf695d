"""One-shot foreground masks for a whole data folder (`mgfen-data masks`), written in the dataset layout
(DATA/masks/<same relative path>.png) with a per-image confidence and a contact sheet to check by eye.
The segmentation itself is train.enhance.foreground."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edge_runtime.errors import MgfenError
from edge_runtime.preprocess import list_images, read_image
from train.enhance.foreground import ForegroundConfig, ForegroundExtractor

_THUMB = 200


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
