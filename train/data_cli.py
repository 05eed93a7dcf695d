"""`mgfen-data`: make and inspect datasets. A thin click layer over train.synth, plus the contact sheet for `show`."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
import cv2
import numpy as np

from edge_runtime.cli_errors import OutputPath, debug_option, error_boundary
from edge_runtime.errors import MgfenError
from edge_runtime.names import CLASS_NAMES

_ZOOM = 224  # full-resolution crop side shown in the contact sheet
_THUMB = 448  # side of the whole-frame thumbnail (the paper's global view size)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
def main() -> None:
    """Make and inspect MGFEN datasets.

    \b
    Examples:
      mgfen-data synth --out runs/data --seed 0
      mgfen-data synth --out runs/hard --n 600 --strength 0.5 --bias 0.95 --backgrounds ~/photos
      mgfen-data show runs/data --out runs/sheet.png --pairs 4
    """


@main.command()
@click.option("--out", "out", required=True, type=OutputPath(folder=True), help="Output folder (must be empty unless --overwrite).")
@click.option("--n", "n", default=300, show_default=True, type=int, help="Number of frames.")
@click.option("--size", default=1024, show_default=True, type=int, help="Frame side in pixels (square frames).")
@click.option("--bias", default=0.9, show_default=True, type=float, help="Train split: probability that the background comes from the own class's half.")
@click.option("--strength", default=1.0, show_default=True, type=float, help="Scale of every micro difference; 0 makes the classes identical in distribution.")
@click.option("--dot-pitch", default=3.5, show_default=True, type=float, help="Halftone dot pitch in frame pixels.")
@click.option("--backgrounds", type=click.Path(path_type=Path), default=None, help="Folder of background photos (searched recursively) instead of procedural families.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed: same seed, same bytes.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Worker processes (does not change the output).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier synth output in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary to stdout.")
@error_boundary
def synth(out: Path, n: int, size: int, bias: float, strength: float, dot_pitch: float,
          backgrounds: Path | None, seed: int, workers: int, overwrite: bool, as_json: bool) -> None:
    """Write the embedded synthetic tag dataset (genuine vs counterfeit micro features).

    \b
    Layout: OUT/{train,val,test}/{genuine,counterfeit}/*.png, OUT/masks/..., OUT/manifest.csv,
    OUT/card.json (all parameters), OUT/regions.json (micro-feature corners per frame).
    Example: mgfen-data synth --out runs/data --n 300 --size 1024 --bias 0.9 --seed 0 --json
    """
    from tqdm import tqdm

    from train.synth import SynthConfig, generate_dataset

    config = SynthConfig(n=n, size=size, bias=bias, strength=strength, seed=seed, dot_pitch=dot_pitch,
                         backgrounds=str(backgrounds) if backgrounds is not None else None)
    with tqdm(total=n, desc="synth", unit="frame", file=sys.stderr, disable=None) as bar:
        summary = generate_dataset(out, config, workers=workers, overwrite=overwrite, progress=bar.update)
    c = summary["counts"]
    per_split = ", ".join(f"{sp} {sum(c[sp].values())}" for sp in c)
    b = summary["measured_bias"]
    click.echo(f"wrote {summary['images']} frames ({summary['groups']} items; {per_split}) to {out} in "
               f"{summary['seconds']:.1f} s ({summary['frames_per_s']} frames/s); background-class bias "
               f"train {b['train']:.2f}, val {b['val']:.2f}, test {b['test']:.2f}", err=as_json)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))


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


@main.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=OutputPath(), help="PNG file to write.")
@click.option("--pairs", default=4, show_default=True, type=click.IntRange(1, 64), help="Rows of genuine | counterfeit.")
@error_boundary
def show(root: Path, out: Path, pairs: int) -> None:
    """Write a contact sheet PNG: genuine beside counterfeit, each with a full-resolution micro-feature zoom.

    Example: mgfen-data show runs/data --out runs/sheet.png --pairs 4
    """
    if not root.is_dir():
        raise MgfenError(f"dataset folder {root} does not exist")
    sheet = contact_sheet(root, pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", sheet)
    if not ok:
        raise MgfenError("PNG encoding failed")
    out.write_bytes(buf.tobytes())
    click.echo(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")


@main.command()
@click.option("--manifest", required=True, type=click.Path(dir_okay=False, path_type=Path), help="datasets/<name>/manifest.csv (source,commit,path,sha1,label,group).")
@click.option("--repo", required=True, type=click.Path(path_type=Path), help="Local copy of the source repository: git clone, bare git dir, or a folder with its files.")
@click.option("--out", "out", required=True, type=OutputPath(folder=True), help="Folder to write OUT/<label>/<file> and OUT/manifest.csv into (must be empty).")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary to stdout.")
@error_boundary
def arrange(manifest: Path, repo: Path, out: Path, overwrite: bool, as_json: bool) -> None:
    """Arrange a real dataset from a local copy of its public repository (bytes unchanged, SHA-1 checked).

    \b
    Writes OUT/{genuine,counterfeit}/<file> and OUT/manifest.csv (split left empty: the seeded
    group-aware split applies). Example:
      git clone https://github.com/OWNER/NAME src && git -C src checkout COMMIT
      mgfen-data arrange --manifest datasets/NAME/manifest.csv --repo src --out runs/real/NAME
    """
    from train.real_data import arrange as arrange_dataset

    summary = arrange_dataset(manifest, repo, out, overwrite=overwrite)
    per = ", ".join(f"{lab} {n} images / {summary['groups'][lab]} groups" for lab, n in summary["images"].items())
    click.echo(f"arranged {summary['total']} files ({summary['bytes'] / 1e6:.1f} MB; {per}) into {out}", err=as_json)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))


# Background work (one-shot masks, offline background replacement) lives in train/bg_cli.py.
from train.bg_cli import augment_cmd, masks_cmd  # noqa: E402

main.add_command(masks_cmd)
main.add_command(augment_cmd)

# The data audit (shortcut baselines, linear probe, near-duplicates) lives in train/audit_cli.py.
from train.audit_cli import audit_cmd  # noqa: E402

main.add_command(audit_cmd)


if __name__ == "__main__":
    main()
