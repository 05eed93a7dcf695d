"""`mgfen-data`: make and inspect datasets. A thin click layer over train/data/ (synth, sheet, real_data), with
the `audit`, `masks` and `augment` commands of train/cli/data_audit.py and train/cli/data_background.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import cv2

from edge_runtime.cli.cli_errors import OutputPath, debug_option, error_boundary
from edge_runtime.errors import MgfenError
from train.cli.data_audit import audit_cmd
from train.cli.data_background import augment_cmd, masks_cmd
from train.data.sheet import contact_sheet

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
@click.option("--out", "out", required=True, type=OutputPath(folder=True),
              help="Output folder (must be empty unless --overwrite).")
@click.option("--n", "n", default=300, show_default=True, type=int, help="Number of frames.")
@click.option("--size", default=1024, show_default=True, type=int, help="Frame side in pixels (square frames).")
@click.option("--bias", default=0.9, show_default=True, type=float,
              help="Train split: probability that the background comes from the own class's half.")
@click.option("--strength", default=1.0, show_default=True, type=float,
              help="Scale of every micro difference; 0 makes the classes identical in distribution.")
@click.option("--dot-pitch", default=3.5, show_default=True, type=float, help="Halftone dot pitch in frame pixels.")
@click.option("--backgrounds", type=click.Path(path_type=Path), default=None,
              help="Folder of background photos (searched recursively) instead of procedural families.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed: same seed, same bytes.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Worker processes (does not change the output).")
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

    from train.data.synth import generate_dataset
    from train.data.synth_config import SynthConfig

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


@main.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=OutputPath(), help="PNG file to write.")
@click.option("--pairs", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Rows of genuine | counterfeit.")
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
@click.option("--manifest", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="datasets/<name>/manifest.csv (source,commit,path,sha1,label,group).")
@click.option("--repo", required=True, type=click.Path(path_type=Path),
              help="Local copy of the source repository: git clone, bare git dir, or a folder with its files.")
@click.option("--out", "out", required=True, type=OutputPath(folder=True),
              help="Folder to write OUT/<label>/<file> and OUT/manifest.csv into (must be empty).")
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
    from train.data.real_data import arrange as arrange_dataset

    summary = arrange_dataset(manifest, repo, out, overwrite=overwrite)
    per = ", ".join(f"{lab} {n} images / {summary['groups'][lab]} groups" for lab, n in summary["images"].items())
    click.echo(f"arranged {summary['total']} files ({summary['bytes'] / 1e6:.1f} MB; {per}) into {out}", err=as_json)
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))


main.add_command(masks_cmd)
main.add_command(augment_cmd)
main.add_command(audit_cmd)


if __name__ == "__main__":
    main()
