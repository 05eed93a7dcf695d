"""`mgfen-keygen`: make the Ed25519 key pair that signs bundles (a thin click layer over
edge_runtime.bundle.signing.generate_keypair)."""

from __future__ import annotations

from pathlib import Path

import click

from edge_runtime.bundle.signing import generate_keypair
from edge_runtime.cli.cli_errors import error_boundary


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "prefix", required=True, type=click.Path(path_type=Path),
              help="Path prefix: writes PREFIX.key (private, mode 0600) and PREFIX.pub (public).")
@click.option("--force", is_flag=True, help="Replace existing key files.")
@error_boundary
def main(prefix: Path, force: bool) -> None:
    """Make a key pair for signing bundles; prints the key id.

    \b
    Examples:
      mgfen-keygen --out keys/team                     # keys/team.key + keys/team.pub
      mgfen-export ckpt.pt --out bundle --sign keys/team.key
      mgfen-scan run --bundle bundle --trust keys/team.pub --source csi://0

    Keep PREFIX.key on the machine that exports; copy only PREFIX.pub to the scanners.
    """
    private, public = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    if not prefix.parent.is_dir():
        raise click.ClickException(f"{prefix.parent}: folder not found (create it first)")
    kid = generate_keypair(private, public, overwrite=force)
    click.echo(f"wrote {private} (private, keep secret) and {public} (public); key id {kid}")


if __name__ == "__main__":  # python -m edge_runtime.cli.keygen_cli
    main()
