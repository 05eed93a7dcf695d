"""`mgfen-data audit`: a thin click layer over train.audit.folder_audit (logic) and train.audit.render (rendering).
Added to the `mgfen-data` group by train/cli/mgfen_data.py. Imports torch only when the command runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edge_runtime.cli.cli_errors import OutputPath, error_boundary
from train.audit.baselines import DEFAULT_BATCH
from train.audit.image_stats import DUPLICATE_DISTANCE, HASH_BITS
from train.evaluate.resample import DEFAULT_FOLDS, N_BOOT, N_PERM


@click.command("audit")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--out", "out", type=OutputPath(folder=True), default=None,
              help="Folder to write audit.json, audit.md and audit.png (per-class histograms) into.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON to stdout (the text goes to stderr).")
@click.option("--probe-sizes", default=None,
              help="Linear-probe input sides, comma-separated multiples of 32, or 'none' to skip the probe "
                   "[default: the edge preset's global view size and three times it].")
@click.option("--folds", type=click.IntRange(2, 100), default=DEFAULT_FOLDS, show_default=True,
              help="Group cross-validation folds.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the folds, the bootstrap and the split of a folder without splits.")
@click.option("--boot", "n_boot", type=click.IntRange(100, 100_000), default=N_BOOT, show_default=True,
              help="Bootstrap replicates (groups resampled).")
@click.option("--permutations", "n_perm", type=click.IntRange(0, 100_000), default=N_PERM, show_default=True,
              help="Label permutations testing whether each shortcut beats chance (0: skip).")
@click.option("--hash-distance", type=click.IntRange(0, HASH_BITS), default=DUPLICATE_DISTANCE, show_default=True,
              help=f"pHash Hamming distance (of {HASH_BITS} bits) counted as a near-duplicate.")
@click.option("--device", default="cpu", show_default=True, help="Device of the probe backbone (cpu, cuda).")
@click.option("--preset", type=click.Choice(["edge", "paper"]), default="edge", show_default=True,
              help="Preset whose frame, global view and crop sizes the photos' pixel size is checked against.")
@click.option("--batch", type=click.IntRange(1, 1024), default=DEFAULT_BATCH, show_default=True,
              help="Images read and probed per batch.")
@error_boundary
def audit_cmd(root: Path, out: Path | None, as_json: bool, probe_sizes: str | None,
              folds: int, seed: int, n_boot: int, n_perm: int, hash_distance: int, device: str, preset: str,
              batch: int) -> None:
    """Audit a data folder: counts, groups, per-class file metadata, near-duplicates, shortcut baselines
    and a linear probe (group cross-validation, 95% intervals), and a verdict.

    \b
    ROOT: any data folder mgfen-train reads (split folders or not, manifest.csv optional).
    Examples:
      mgfen-data audit runs/data
      mgfen-data audit photos/ --out runs/audit --probe-sizes none
      mgfen-data audit photos/ --json > audit.json
    """
    from tqdm import tqdm

    from train.audit.folder_audit import audit_folder
    from train.audit.probe import DEFAULT_PROBE_SIZES, parse_probe_sizes
    from train.audit.render import format_text, write_audit
    from train.evaluate.predict import resolve_device
    from train.model.mgfen import PRESETS

    bar = tqdm(desc="audit", unit="image", file=sys.stderr, disable=None, leave=False)
    try:  # the bar is closed before an error line is printed
        resolve_device(device)
        sizes = DEFAULT_PROBE_SIZES if probe_sizes is None else parse_probe_sizes(probe_sizes)

        def start(n: int) -> None:
            bar.total = n
            bar.refresh()

        report = audit_folder(root, probe_sizes=sizes, folds=folds, seed=seed, n_boot=n_boot, n_perm=n_perm,
                              hash_distance=hash_distance, device=device, batch=batch, progress=bar.update,
                              on_start=start, preprocess=PRESETS[preset].preprocess)
        written = write_audit(report, out) if out is not None else []
    finally:
        bar.close()
    click.echo(format_text(report), err=as_json)
    click.echo(f"took {report['seconds']:.1f} s" + (f"; wrote {', '.join(str(p) for p in written)}" if written else ""),
               err=as_json)
    if as_json:
        click.echo(json.dumps(report))
