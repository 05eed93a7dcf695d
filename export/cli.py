"""mgfen-export: checkpoint -> bundle (ONNX, parity, INT8, manifest), and TensorRT engines on the device."""

from __future__ import annotations

import json
from pathlib import Path

import click

from calibration import DEFAULT_CALIB_N, DEFAULT_FALLBACK
from calibration.cpu_features import DEFAULT_REDUCE_RANGE, REDUCE_RANGE_MODES
from edge_runtime import names
from edge_runtime.bundle.int8_gate import MAX_DROP_POINTS, MIN_AGREEMENT
from edge_runtime.bundle.manifest import sign_bundle
from edge_runtime.bundle.signing import load_signing_key
from edge_runtime.cli.cli_errors import OutputPath, error_boundary

EPILOG = """\b
Examples:
  mgfen-export runs/edge/checkpoint.pt --out bundles/edge
  mgfen-export ckpt.pt --out bundle --int8 --calib data/train --val data/val
  mgfen-export ckpt.pt --out bundle --int8 --calib data          # dataset root: train/ calibrates,
                                                                 # val/ gates, val/ + test/ kept off
  mgfen-export ckpt.pt --out bundle --int8 --calib data --no-fallback --reduce-range off
  mgfen-export ckpt.pt --out bundle --sign keys/team.key         # signed (keys: mgfen-keygen)
  mgfen-export bundle --engine --precision int8                  # on the Jetson: engines only
"""


@click.command(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--out", type=OutputPath(folder=True), help="Bundle folder to write (created if needed); a "
              "previous bundle there is replaced only when the new one passed every check.")
@click.option("--opset", type=int, default=17, show_default=True,
              help="ONNX opset (13..20; TensorRT 8.x, JetPack 5 and 6.0, parses <= 17).")
@click.option("--int8", "int8", is_flag=True, help="Also write INT8 QDQ files (TensorRT and CPU flavours).")
@click.option("--calib", type=click.Path(path_type=Path), help="Folder of real calibration images "
              "(a dataset root uses its train/ split).")
@click.option("--calib-n", type=click.IntRange(min=1), default=DEFAULT_CALIB_N, show_default=True,
              help="Most calibration images: the whole train split up to this many, stratified by class.")
@click.option("--calib-method", type=click.Choice(["entropy", "minmax", "percentile"]), default="entropy",
              show_default=True, help="Activation range method (the search tries the others when it fails).")
@click.option("--fallback/--no-fallback", default=DEFAULT_FALLBACK, show_default=True,
              help="When an INT8 flavour fails the gate: keep its most INT8-sensitive nodes FP32 (the fewest "
                   "that pass) and try the other calibration methods. Needs labelled val images.")
@click.option("--reduce-range", type=click.Choice(REDUCE_RANGE_MODES), default=DEFAULT_REDUCE_RANGE,
              show_default=True, help="CPU flavour: 7-bit weights, onnxruntime's remedy for U8S8 saturation on "
                                      "x86 without VNNI; auto: on when this machine lacks VNNI.")
@click.option("--int8-flavours", type=click.Choice(["cpu,trt", "cpu", "trt"]), default="cpu,trt", show_default=True,
              help="Which INT8 files to make: cpu (onnxruntime U8S8, for CPUs) and/or trt (TensorRT QDQ S8S8).")
@click.option("--val", type=click.Path(path_type=Path), help="Labelled folder (genuine/, counterfeit/) for "
              "the INT8-vs-FP32 report and the parity frames.")
@click.option("--max-int8-drop", type=float, default=MAX_DROP_POINTS, show_default=True,
              help="INT8 gate: fail when a flavour's accuracy at the bundle's thresholds (uncertain counted "
                   "wrong) is more than this many points below FP32's on the val images.")
@click.option("--min-int8-agreement", type=float, default=MIN_AGREEMENT, show_default=True,
              help="INT8 gate: fail when a flavour's verdicts equal FP32's on a smaller fraction of the val images.")
@click.option("--force", is_flag=True, help="Keep INT8 files that fail the INT8 gate (recorded failed-forced; "
              "the scanner's auto precision then runs fp32).")
@click.option("--engine", is_flag=True, help="Build TensorRT engines into BUNDLE/engines (on the device).")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), default="int8", show_default=True,
              help="Engine precision (int8 builds from the TensorRT-flavour QDQ file).")
@click.option("--sign", "sign_key", type=click.Path(path_type=Path), default=None,
              help="Private key (PEM, from mgfen-keygen): sign the written bundle (manifest.sig); checked "
                   "before the export starts.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@error_boundary
def main(source: Path, out: Path | None, opset: int, int8: bool, calib: Path | None, calib_n: int,
         calib_method: str, fallback: bool, reduce_range: str, int8_flavours: str, val: Path | None,
         max_int8_drop: float, min_int8_agreement: float, force: bool, engine: bool, precision: str,
         sign_key: Path | None, as_json: bool) -> None:
    """Export checkpoint SOURCE into a bundle folder; or, with --engine and SOURCE a bundle folder,
    build that bundle's TensorRT engines on this device."""
    def log(msg: str) -> None:
        click.echo(msg, err=True)

    report: dict = {}
    if source.is_dir() and (source / "manifest.json").is_file():
        if not engine:
            raise click.UsageError(f"{source} is a bundle; pass a checkpoint, or --engine to build engines")
        if out is not None and out.resolve() != source.resolve():  # engines are built into SOURCE/engines
            raise click.UsageError(f"--out is for exporting a checkpoint; `{source} --engine` builds into "
                                   f"{source}/{names.ENGINE_DIR} (drop --out {out})")
        bundle = source
        if sign_key is not None:
            raise click.UsageError("--sign signs a bundle written from a checkpoint; engines are not "
                                   "covered by the signature")
    else:
        if out is None:
            raise click.UsageError("--out BUNDLE is required when exporting a checkpoint")
        if int8 and calib is None:
            raise click.UsageError("--int8 needs --calib DIR with real images (random data is never used)")
        signer = load_signing_key(sign_key) if sign_key is not None else None  # fail before the export
        from export.bundle import ExportConfig, export_bundle  # torch is imported here, not for --engine

        config = ExportConfig(opset=opset, int8=int8, calib=calib, calib_n=calib_n,
                              calib_method=calib_method, fallback=fallback, reduce_range=reduce_range,
                              val=val, max_int8_drop=max_int8_drop,
                              min_int8_agreement=min_int8_agreement, force=force,
                              int8_flavours=tuple(int8_flavours.split(",")))
        signed: dict = {}

        def seal(folder: Path) -> None:  # signs the staging folder, before it replaces --out
            sig = sign_bundle(folder, signer)
            signed.update(file=str(out / sig.name), key_id=signer.key_id)

        report = export_bundle(source, out, config, log, seal if signer is not None else None)
        bundle = out
        log(f"bundle written to {out}")
        if signed:
            report["signature"] = signed
            log(f"signed {names.MANIFEST_FILE} with key {signed['key_id']} ({names.SIGNATURE_FILE})")
    if engine:
        from export.engine import ensure_engines

        results = ensure_engines(bundle, precision, log=log)
        for res in results.values():  # one verification line per engine, for a ticket
            click.echo(res.line, err=as_json)  # stdout stays pure JSON with --json
        report["engines"] = {g: {"plan": str(r.plan), "cached": r.cached, "verify": r.entry.get("verify")}
                             for g, r in results.items()}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
