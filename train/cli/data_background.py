"""`mgfen-data masks` and `mgfen-data augment`: click commands over train.enhance.masks and
train.enhance.augment, added to the `mgfen-data` group by train/cli/mgfen_data.py."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge_runtime.cli.cli_errors import OutputPath, error_boundary
from train.enhance.blend import BLEND_MODES


MASKS_EXAMPLES = """
\b
Examples:
  mgfen-data masks --ref ref.jpg --ref-mask ref_mask.png --data photos/
  mgfen-data masks --ref a.jpg --ref-mask a.png --ref b.jpg --ref-mask b.png --data photos/ --overwrite
  mgfen-data masks --ref ref.jpg --ref-box 120,80,560,400 --data photos/      # GrabCut inside the box makes the mask
"""


@click.command("masks", epilog=MASKS_EXAMPLES)
@click.option("--ref", "refs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Reference image (repeatable).")
@click.option("--ref-mask", "ref_masks", multiple=True, type=click.Path(path_type=Path),
              help="Its foreground mask (8-bit, same size; one per --ref).")
@click.option("--ref-box", "ref_boxes", multiple=True,
              help="Instead of --ref-mask: X,Y,W,H box around the object in the reference's pixels (one per --ref); "
                   "GrabCut inside it makes the reference mask.")
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder to segment.")
@click.option("--out", type=OutputPath(folder=True), default=None,
              help="Masks folder (default DATA/masks, the dataset layout).")
@click.option("--overwrite", is_flag=True, help="Replace mask files that already exist.")
@click.option("--sheet-max", type=click.IntRange(1, 1000), default=64, show_default=True,
              help="Tiles in the contact sheet (least confident first).")
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
    from train.enhance.foreground import load_references
    from train.enhance.masks import make_masks

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


AUGMENT_EXAMPLES = """
\b
Examples:
  mgfen-data augment --data runs/data --out runs/data_bg --copies 4
  mgfen-data augment --data photos --out photos_bg --backgrounds ~/bg_photos --copies 2 --blend poisson
"""


@click.command("augment", epilog=AUGMENT_EXAMPLES)
@click.option("--data", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset folder with masks/.")
@click.option("--out", required=True, type=OutputPath(folder=True), help="Output dataset folder.")
@click.option("--backgrounds", type=click.Path(path_type=Path), default=None,
              help="Folder of background photos (recursive). Default: procedural families.")
@click.option("--families/--no-families", default=None,
              help="Also use the procedural families (default: only when no --backgrounds).")
@click.option("--copies", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="Background-replaced copies per image.")
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

    from train.enhance.augment import OfflineAugmentConfig, augment_dataset
    from train.enhance.backgrounds import make_library

    library = make_library(backgrounds, families)
    chosen = tuple(s.strip() for s in splits.split(",") if s.strip())
    cfg = OfflineAugmentConfig(copies=copies, blend=blend, splits=chosen, seed=seed)
    with tqdm(desc="augment", unit="img", disable=as_json) as bar:
        summary = augment_dataset(data, out, library, cfg, overwrite=overwrite, progress=bar.update)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"wrote {summary['originals']} originals + {summary['copies']} copies to {summary['out']}")
