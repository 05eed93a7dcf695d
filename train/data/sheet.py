"""The contact sheet of a dataset (`mgfen-data show`): genuine beside counterfeit, each a whole-frame
thumbnail and a 2x full-resolution zoom on a micro feature (from the synthetic dataset's regions.json)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.errors import MgfenError
from edge_runtime.names import CLASS_NAMES

_ZOOM = 224  # full-resolution crop side shown in the contact sheet
_THUMB = 448  # side of the whole-frame thumbnail (the paper's global view size)


def _read_rows(root: Path) -> list[dict[str, str]]:
    """Manifest rows, or rows found by walking split/class folders when there is no manifest."""
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("path", "label") if c not in (reader.fieldnames or [])]
            if missing:
                raise MgfenError(f"{manifest}: no {' or '.join(missing)} column (the header needs path and label)")
            return list(reader)
    rows = []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in (".png", ".jpg", ".jpeg") and "masks" not in p.relative_to(root).parts:
            rel = p.relative_to(root)
            if len(rel.parts) >= 2 and rel.parts[-2] in CLASS_NAMES:
                split = rel.parts[-3] if len(rel.parts) >= 3 else ""
                rows.append({"path": rel.as_posix(), "split": split, "label": rel.parts[-2], "group": "", "background": ""})
    return rows


def _read_regions(path: Path) -> dict:
    """regions.json of a synth dataset: {image path: {feature: corners}}; MgfenError when it is not."""
    try:
        regions = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MgfenError(f"{path}: not valid JSON ({exc}) (delete it, or write the dataset again)") from None
    if not isinstance(regions, dict):
        raise MgfenError(f"{path}: expected a JSON object of image path -> regions (delete it, or write the "
                         f"dataset again)")
    return regions


def _label_bar(width: int, text: str, colour: tuple[int, int, int]) -> np.ndarray:
    bar = np.full((30, width, 3), 255, np.uint8)
    bar[:, :8] = colour
    cv2.putText(bar, text, (14, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (20, 20, 20), 1, cv2.LINE_AA)
    return bar


def _panel(root: Path, row: dict[str, str], regions: dict, feature_i: int) -> np.ndarray:
    """Thumbnail of the whole frame (box on the zoom area) beside a 224 px full-resolution crop shown 2x."""
    img = cv2.imread(str(root / row["path"]), cv2.IMREAD_COLOR)
    if img is None:
        raise MgfenError(f"cannot read {root / row['path']}")
    h, w = img.shape[:2]
    reg = regions.get(row["path"])
    if reg:
        names = sorted(reg)
        fname = names[feature_i % len(names)]
        cx, cy = np.array(reg[fname]).mean(0)
    else:
        fname, cx, cy = "centre", w / 2, h / 2
    z = min(_ZOOM, h, w)
    x0 = int(np.clip(cx - z / 2, 0, w - z))
    y0 = int(np.clip(cy - z / 2, 0, h - z))
    zoom = cv2.resize(img[y0:y0 + z, x0:x0 + z], (2 * _ZOOM, 2 * _ZOOM), interpolation=cv2.INTER_NEAREST)
    f = _THUMB / max(h, w)
    thumb = cv2.resize(img, (int(round(w * f)), int(round(h * f))), interpolation=cv2.INTER_AREA)
    cv2.rectangle(thumb, (int(x0 * f), int(y0 * f)), (int((x0 + z) * f), int((y0 + z) * f)), (0, 0, 255), 2)
    canvas = np.full((_THUMB, _THUMB, 3), 255, np.uint8)
    canvas[: thumb.shape[0], : thumb.shape[1]] = thumb
    body = np.concatenate([canvas, zoom], axis=1)
    colour = (60, 160, 60) if row["label"] == CLASS_NAMES[0] else (40, 40, 210)
    text = f"{row['label'].upper()}  {Path(row['path']).name}  bg={row.get('background', '')}  |  zoom: {fname} {z}px @2x"
    return np.concatenate([_label_bar(body.shape[1], text, colour), body], axis=0)


def contact_sheet(root: Path, pairs: int) -> np.ndarray:
    """HxWx3 uint8 BGR sheet: `pairs` rows of (genuine | counterfeit), each a thumbnail plus a 2x zoom."""
    rows = _read_rows(root)
    if not rows:
        raise MgfenError(f"{root} holds no dataset images (expected manifest.csv or split/class folders)")
    reg_file = root / "regions.json"
    regions = _read_regions(reg_file) if reg_file.is_file() else {}
    pick = []
    for cls in CLASS_NAMES:
        cls_rows = [r for r in rows if r["label"] == cls]
        test_rows = [r for r in cls_rows if r.get("split") == "test"]
        pick.append((test_rows if len(test_rows) >= pairs else cls_rows)[:pairs])
    n = min(len(pick[0]), len(pick[1]))
    if n == 0:
        raise MgfenError(f"{root} needs images of both classes {CLASS_NAMES} for a contact sheet")
    lines = []
    for i in range(n):
        left = _panel(root, pick[0][i], regions, i)
        right = _panel(root, pick[1][i], regions, i)
        gap = np.full((left.shape[0], 16, 3), 255, np.uint8)
        lines.append(np.concatenate([left, gap, right], axis=1))
        lines.append(np.full((12, lines[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(lines[:-1], axis=0)
