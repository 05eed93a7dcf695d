"""Checkpoint -> bundle folder: ONNX graphs, parity checks, optional INT8 files, report.json, manifest.json.
The report's `cost` section: MACs and bytes per graph and the estimated cost per frame on every target
Jetson (edge_runtime.cost; an estimate, not measured on a device).

    report = export_bundle(Path("ckpt.pt"), Path("bundle"), ExportConfig(int8=True, calib=Path("data")))

The export is a transaction: everything is written into a staging folder beside `out`
(`.NAME.XXXX.partial`), and only when every check passed (parity, TensorRT lint, the INT8 gate) and the
manifest (and, from the CLI, the signature) is written is the staging folder renamed to `out`. A previous
bundle at `out` is replaced as a whole (engines built from it included) and stays loadable until that
rename; a failed or interrupted export removes the staging folder and leaves `out` as it was. A failed
export that got as far as exporting writes its report, with the reason, to `NAME.failed-report.json`
beside `out`; the next successful export removes it. Inputs are validated first (checkpoint, output
folder; evaluation and calibration images must decode) so bad input fails in a second.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import onnx
import onnxruntime
import torch

from calibration import DEFAULT_CALIB_N, DEFAULT_FALLBACK, CalibrationError
from calibration.accuracy import OrtPipeline, PipelineParams, flavour_pipeline, make_session
from calibration.cpu_features import DEFAULT_REDUCE_RANGE, REDUCE_RANGE_MODES, choose_reduce_range
from calibration.fallback import MAX_FALLBACK_NODES, GateProbe, Quantiser, search_flavour, sensitivity_feeds
from calibration.lint import lint_trt
from calibration.quantize import FLAVOURS, METHODS, prepare_for_quantization
from calibration.reader import GlobalReader, PartsReader
from calibration.select import CalibrationSet, select_calibration, stratified_pick, candidates
from calibration.verdict_gate import GateCriteria, GateResult, run_gate, unverified_record
from edge_runtime import __version__, names
from edge_runtime.bundle.int8_gate import MAX_DROP_POINTS, MIN_AGREEMENT
from edge_runtime.bundle.manifest import FileEntry, Manifest, sha256_file, write_manifest
from edge_runtime.cost.devices import DEVICES
from edge_runtime.cost.estimate import estimate_bundle, summary_line
from edge_runtime.errors import ImageError
from edge_runtime.novelty import NoveltyTable, save_table
from edge_runtime.preprocess import list_images, read_image
from edge_runtime.quality_fit import describe_gate_fit
from edge_runtime.roi import Thresholds
from export import ExportError
from export.onnx_export import DEFAULT_OPSET, export_graphs
from export.parity import (MIN_INPUTS, check_graph_parity, check_runtime_parity, frames_from,
                           synthetic_frames)

SAMPLES_DIR = "calibration"  # a few prepared calibration frames, for checking engines on the device
N_SAMPLES = 4


class Int8DropError(ExportError):
    """An INT8 flavour failed the verdict gate (calibration.verdict_gate): its verdicts at the bundle's
    thresholds differ from FP32's on too many val images, or its accuracy fell by more than --max-int8-drop."""


@dataclass(frozen=True)
class ExportConfig:
    """Options of one export (the CLI's flags, resolved). Written into report.json."""

    opset: int = DEFAULT_OPSET
    int8: bool = False
    calib: Path | None = None
    calib_n: int = DEFAULT_CALIB_N
    calib_method: str = "entropy"
    fallback: bool = DEFAULT_FALLBACK  # calibration.fallback's search when a flavour fails the gate
    max_fallback_nodes: int = MAX_FALLBACK_NODES
    reduce_range: str = DEFAULT_REDUCE_RANGE  # cpu flavour: "auto" (7-bit weights without VNNI), "on", "off"
    val: Path | None = None
    max_int8_drop: float = MAX_DROP_POINTS
    min_int8_agreement: float = MIN_AGREEMENT
    force: bool = False
    parity_frames: int = 8
    val_limit: int | None = None
    int8_flavours: tuple[str, ...] = FLAVOURS  # "cpu" (onnxruntime on CPUs) and/or "trt" (TensorRT)

    def __post_init__(self) -> None:
        if self.int8 and self.calib is None:
            raise ExportError("--int8 needs --calib DIR with real calibration images (random data is never used)")
        if self.calib_method not in METHODS:
            raise ExportError(f"--calib-method must be one of {', '.join(METHODS)}, got {self.calib_method!r}")
        if self.calib_n < 1:
            raise ExportError(f"--calib-n must be >= 1, got {self.calib_n}")
        if self.reduce_range not in REDUCE_RANGE_MODES:
            raise ExportError(f"--reduce-range must be one of {', '.join(REDUCE_RANGE_MODES)}, got {self.reduce_range!r}")
        if self.max_fallback_nodes < 0:
            raise ExportError(f"max_fallback_nodes must be >= 0, got {self.max_fallback_nodes}")
        try:
            self.gate_criteria()
        except CalibrationError as exc:
            raise ExportError(str(exc)) from None
        if not self.int8_flavours or set(self.int8_flavours) - set(FLAVOURS):
            raise ExportError(f"--int8-flavours must name some of {', '.join(FLAVOURS)}, got {self.int8_flavours}")
        if self.parity_frames < MIN_INPUTS:
            raise ExportError(f"parity needs at least {MIN_INPUTS} frames")

    def gate_criteria(self) -> GateCriteria:
        """The INT8 verdict gate's criteria (CalibrationError for values out of range)."""
        return GateCriteria(self.min_int8_agreement, self.max_int8_drop)

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def failed_report_path(out: Path) -> Path:
    """Where a failed export of bundle folder `out` leaves its report: NAME.failed-report.json beside it."""
    return out.with_name(out.name + ".failed-report.json")


def _is_bundle_entry(name: str) -> bool:
    """Whether a name in a folder is one an export or `--engine` writes (the folder may be replaced)."""
    return (name in (names.MANIFEST_FILE, names.SIGNATURE_FILE, names.REPORT_FILE, SAMPLES_DIR, names.ENGINE_DIR,
                     names.NOVELTY_FILE)
            or name.endswith((".onnx", ".tmp")))


def prepare_out_dir(out: Path) -> Path:
    """Check that `out` may be replaced by a bundle (missing, or holding only what a bundle holds: it is
    replaced as a whole) and create the staging folder beside it; returns the staging folder. ExportError with one line otherwise."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: not a folder")
    others = sorted(p.name for p in out.iterdir() if not _is_bundle_entry(p.name)) if out.is_dir() else []
    if others:  # e.g. a training run's folder: its checkpoints must not go with the old bundle
        raise ExportError(f"{out}: holds files that are not part of a bundle ({', '.join(others[:3])}"
                          f"{', ...' if len(others) > 3 else ''}); the bundle replaces its folder as a whole, "
                          "so pass a new or empty folder, or a bundle")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"{out}: cannot write the bundle there ({exc.strerror or exc})") from None


def commit_bundle(staging: Path, out: Path) -> None:
    """Rename the finished bundle folder `staging` to `out`. A previous `out` is first moved into a
    sibling scratch folder (so it is kept if the second rename fails) and removed after. Both renames stay
    in one parent folder, so neither copies data; between them `out` is briefly absent, never half-written."""
    aside = None
    if out.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        out.rename(aside / out.name)
    try:
        staging.rename(out)
    except OSError as exc:
        if aside is not None:  # put the previous bundle back; if even that fails, it stays in `aside`
            (aside / out.name).rename(out)
            aside.rmdir()
        raise ExportError(f"{out}: cannot move the new bundle into place ({exc.strerror or exc})") from None
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    failed_report_path(out).unlink(missing_ok=True)


def load_model(ckpt: Path):
    """(model in eval mode, checkpoint info) via train.model.checkpoint; typed errors pass through."""
    if not ckpt.is_file():
        raise ExportError(f"{ckpt}: checkpoint file not found")
    from train.model.checkpoint import load_checkpoint

    model, info = load_checkpoint(ckpt, map_location="cpu")
    return model.eval(), info


def evaluation_folder(config: ExportConfig) -> Path | None:
    """--val, else the val/ split of a dataset-root --calib folder, else None. Every image in it must
    decode (ExportError naming the first that does not): it is checked before the bundle is written."""
    val = None
    if config.val is not None:
        if not Path(config.val).is_dir():
            raise ExportError(f"{config.val}: --val folder not found")
        val = Path(config.val)
    elif config.calib is not None and (Path(config.calib) / "train").is_dir() and (Path(config.calib) / "val").is_dir():
        val = Path(config.calib) / "val"
    for path in list_images(val) if val is not None else []:
        try:
            read_image(path)
        except ImageError as exc:
            raise ExportError(f"unusable evaluation image: {exc}") from None
    return val


def parity_frames(model, config: ExportConfig, val: Path | None, calib: CalibrationSet | None):
    """Frames for the parity checks: spread over --val (both classes), else the calibration images,
    else synthetic frames. Returns (frames, description)."""
    cfg = model.cfg.preprocess
    count = config.parity_frames
    if val is not None and list_images(val):
        _, images, _ = candidates(val)
        picks = [im.path for im in stratified_pick(images, count)]
        return frames_from(picks, cfg), f"{len(picks)} images of {val}"
    if calib is not None and len(calib.paths) >= MIN_INPUTS:
        picks = calib.paths[:count]
        return frames_from(picks, cfg), f"{len(picks)} calibration images"
    return synthetic_frames(cfg, count), f"{count} synthetic frames (train.data.synth.render_sample)"


def write_samples(out: Path, calib: CalibrationSet, cfg) -> dict:
    """Save up to N_SAMPLES prepared calibration frames (F x F RGB, as PNG) for the on-device engine
    check; returns {relative name: sha256}."""
    folder = out / SAMPLES_DIR
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    samples = {}
    for i, frame in enumerate(frames_from(calib.paths[:N_SAMPLES], cfg)):
        path = folder / f"sample{i}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
            raise ExportError(f"{path}: cannot write a calibration sample")
        samples[f"{SAMPLES_DIR}/{path.name}"] = sha256_file(path)
    return samples


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


def quantize_bundle(out: Path, calib: CalibrationSet, cfg, config: ExportConfig, probe: GateProbe | None,
                    log: Callable[[str], None]) -> dict:
    """Write the INT8 files (global/parts x each flavour) next to the FP32 graphs and lint the TRT ones.

    With a probe (a labelled val split and config.fallback) each flavour goes through calibration.fallback's
    search; without, the configured method quantises everything, as before the search existed. The cpu
    flavour's reduce_range comes from config.reduce_range (calibration.cpu_features). Returns
    {"files": {name: quantisation record}, "reduce_range": the choice, "flavours": {flavour: the manifest's
    calibration.flavours entry}, "trials": {flavour: every trial of the search}}.
    """
    choice = choose_reduce_range(config.reduce_range)
    if "cpu" in config.int8_flavours:
        log(f"INT8 cpu flavour: reduce_range {'on' if choice.reduce_range else 'off'} ({choice.reason})")
    g_session = make_session(out / names.model_file("global"))
    files, flavours, trials = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="mgfen-export-") as tmp:
        prepared = {g: prepare_for_quantization(out / names.model_file(g), Path(tmp) / f"{g}.onnx")
                    for g in names.GRAPHS}
        readers = {"global": GlobalReader(calib.paths, cfg), "parts": PartsReader(calib.paths, cfg, g_session)}
        quantiser = Quantiser(prepared, readers, Path(tmp))
        feeds = sensitivity_feeds(readers) if probe is not None else {}
        for flavour in config.int8_flavours:
            res = search_flavour(quantiser, probe, flavour, config.calib_method,
                                 choice.reduce_range and flavour == "cpu", feeds, config.max_fallback_nodes, log)
            flavours[flavour], trials[flavour] = res.record(), res.trials
            for graph, q in res.files.items():
                dest = out / names.model_file(graph, "int8", flavour)
                shutil.copyfile(q.path, dest)
                files[dest.name] = {**q.to_dict(), "file": dest.name}
                if flavour == "trt":
                    problems = lint_trt(onnx.load(str(dest)))
                    files[dest.name]["lint"] = [str(v) for v in problems]
                    if problems:
                        raise ExportError(f"{dest.name} breaks TensorRT's Q/DQ rules: {problems[0]} "
                                          f"(+{len(problems) - 1} more)")
    return {"files": files, "reduce_range": choice.to_dict(), "flavours": flavours, "trials": trials}


def gate_int8(out: Path, params: PipelineParams, fp32: OrtPipeline, val: Path | None, cfg, classes: tuple[str, ...],
              thresholds: Thresholds, config: ExportConfig, report: dict, log: Callable[[str], None],
              novelty: NoveltyTable | None = None) -> GateResult:
    """The verdict gate (calibration.verdict_gate) of every INT8 flavour in `out` on `val`, or the
    `unverified` record without a val folder; fills report["gate"] and logs one line per flavour. With
    the bundle's `novelty` table each flavour's novelty score and unknown decision are compared too."""
    criteria = config.gate_criteria()
    if val is None:
        reason = "no labelled val split (--val DIR or a dataset root's val/): INT8 verdicts not compared with FP32"
        log(f"warning: {reason}; INT8 marked unverified (mgfen-scan's auto precision runs fp32)")
        result = GateResult(unverified_record(config.int8_flavours, criteria, reason), None, [])
    else:
        int8 = {f: flavour_pipeline(out / names.model_file("global", "int8", f),
                                    out / names.model_file("parts", "int8", f), params, f)
                for f in config.int8_flavours}
        result = run_gate(fp32, int8, val, cfg, classes, thresholds, params.positive_index, criteria, config.force,
                          config.val_limit, novelty)
        for line in result.summary:
            log(line)
        if config.force and any(e["status"] != "passed" for e in result.record["flavours"].values()):
            log("warning: INT8 gate failed (kept: --force, recorded failed-forced; auto precision runs fp32)")
    report["gate"] = result.record
    if result.repeatability is not None:
        report["fp32_repeatability"] = result.repeatability
    return result


def export_bundle(ckpt: str | Path, out: str | Path, config: ExportConfig,
                  log: Callable[[str], None] = lambda msg: None,
                  seal: Callable[[Path], None] | None = None) -> dict:
    """Export checkpoint `ckpt` into bundle folder `out`; return the report (also in report.json).
    `seal(folder)` runs on the finished staging folder before it becomes `out` (the CLI signs there).

    Raises ExportError (or another MgfenError) for bad input, failed parity or lint, and Int8DropError
    when an INT8 flavour fails the verdict gate (config.gate_criteria()) and config.force is off; `out`
    is then as it was (module docstring).
    """
    ckpt = Path(ckpt)
    model, info = load_model(ckpt)
    source = {"checkpoint": ckpt.name, "checkpoint_sha256": sha256_file(ckpt)}
    return export_model(model, info, source, out, config, log, seal)


def export_model(model, info: dict, source: dict, out: str | Path, config: ExportConfig,
                 log: Callable[[str], None] = lambda msg: None,
                 seal: Callable[[Path], None] | None = None) -> dict:
    """export_bundle for a model already in memory (eval mode) and its checkpoint `info` dict
    (classes, thresholds, metrics, data_hash, train_config, epoch); `source` names the checkpoint
    (name, sha256) for the provenance."""
    dest = Path(out)
    staging = prepare_out_dir(dest)
    try:
        report = _export_into(model, info, source, staging, failed_report_path(dest), config, log)
        if seal is not None:
            seal(staging)
        commit_bundle(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a commit
    return report


def _export_into(model, info: dict, source: dict, out: Path, failed_report: Path, config: ExportConfig,
                 log: Callable[[str], None]) -> dict:
    """The export proper, into the (staging) folder `out`; a failure's report goes to `failed_report`."""
    t_start = time.perf_counter()
    model.eval()
    val = evaluation_folder(config)
    calib = None
    if config.int8:
        calib = select_calibration(config.calib, config.calib_n, [val] if val is not None else None)
        log(f"calibration: {len(calib.images)} of {calib.available} images from {calib.root}")
    mcfg = model.cfg
    cfg = mcfg.preprocess
    report: dict = {"checkpoint": source, "config": config.to_dict(), "versions": {
        "toolkit": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}}
    report_path = out / names.REPORT_FILE

    def fail(exc: ExportError) -> None:
        report["error"] = str(exc)
        report["seconds"] = round(time.perf_counter() - t_start, 2)
        _write_json(failed_report, report)
        raise exc

    t0 = time.perf_counter()
    tensors = export_graphs(model, out, config.opset)
    report["export_seconds"] = round(time.perf_counter() - t0, 2)
    log("exported global.onnx and parts.onnx")

    classes = tuple(info.get("classes") or names.CLASS_NAMES)
    positive = classes.index(names.POSITIVE_CLASS) if names.POSITIVE_CLASS in classes else len(classes) - 1
    frames, frames_from_desc = parity_frames(model, config, val, calib)
    graph = check_graph_parity(model, out / names.model_file("global"), out / names.model_file("parts"),
                               frames[: max(MIN_INPUTS, min(len(frames), 4))])
    params = PipelineParams(cfg, float(mcfg.global_weight), bool(mcfg.use_parts), positive)
    fp32 = OrtPipeline(out / names.model_file("global"), out / names.model_file("parts"), params)
    runtime = check_runtime_parity(model, fp32, frames, positive)
    report["parity"] = {"source": frames_from_desc, "graphs": graph, "runtime": runtime}
    log(f"parity: graphs max prob error {max(graph['max']['global_prob'], graph['max']['part_prob']):.2e}, "
        f"runtime max prob error {runtime['max_abs_prob_diff']:.2e}")
    if not graph["passed"]:
        fail(ExportError(f"ONNX parity failed: {graph['failures'][0]}"))
    if not runtime["passed"]:
        fail(ExportError(f"runtime-path parity failed: {runtime['failures'][0]}"))
    report["cost"] = estimate_bundle(out, cfg, int(mcfg.k), bool(mcfg.use_parts), DEVICES.values())
    log(summary_line(report["cost"]))

    thresholds = Thresholds(**info["thresholds"]) if info.get("thresholds") else Thresholds()
    files = {names.model_file(g): FileEntry(g, "fp32", "") for g in names.GRAPHS}
    table = None
    if info.get("novelty"):  # checkpoints from before the `unknown` answer have none
        from train.fit.novelty_fit import table_from_state

        table = table_from_state(info["novelty"])
        save_table(table, out / names.NOVELTY_FILE)
        files[names.NOVELTY_FILE] = FileEntry(names.NOVELTY, "fp32", "")
        report["novelty"] = table.to_dict()
        log(f"novelty table: threshold {table.threshold:.3g} for {table.target_rate:.0%} false refusal "
            f"({table.source}, {table.n_calib} images)")
    calibration = None
    int8_gate = None
    if calib is not None:
        t0 = time.perf_counter()
        try:
            probe = (GateProbe(fp32, params, val, classes, thresholds, config.gate_criteria(), config.val_limit, table)
                     if config.fallback and val is not None else None)
            report["int8"] = quantize_bundle(out, calib, cfg, config, probe, log)
        except CalibrationError as exc:
            fail(ExportError(str(exc)))
        report["int8"]["quantize_seconds"] = round(time.perf_counter() - t0, 2)
        log(f"quantised {2 * len(config.int8_flavours)} INT8 files in {report['int8']['quantize_seconds']} s")
        for g in names.GRAPHS:
            for flavour in config.int8_flavours:
                files[names.model_file(g, "int8", flavour)] = FileEntry(g, "int8", "", flavour)
        calibration = calib.to_manifest(config.calib_method)
        calibration["reduce_range"] = report["int8"]["reduce_range"]
        calibration["flavours"] = report["int8"]["flavours"]
        calibration["samples"] = write_samples(out, calib, cfg)
        int8_gate = gate_int8(out, params, fp32, val, cfg, classes, thresholds, config, report["int8"], log, table)
        if int8_gate.failure is not None:
            fail(Int8DropError(f"INT8 gate failed: {int8_gate.failure}; report in {failed_report}; "
                               "use --force to keep it"))

    provenance = {
        **source, "data_hash": info.get("data_hash"), "metrics": info.get("metrics", {}),
        "threshold_fit": info.get("threshold_fit"),  # how the checkpoint's thresholds were fitted (train.fit.thresholds)
        "epoch": info.get("epoch"), "model_config": mcfg.to_dict(), "train_config": info.get("train_config"),
        "opset": config.opset, "exported_with": report["versions"],
    }
    manifest = Manifest(classes=classes, preprocess=cfg, k=int(mcfg.k),
                        box_size=mcfg.box_pixels / cfg.frame_size, global_weight=float(mcfg.global_weight),
                        use_parts=bool(mcfg.use_parts), thresholds=thresholds, tensors=tensors, files=files,
                        provenance=provenance, calibration=calibration,
                        int8_gate=int8_gate.record if int8_gate is not None else None,
                        quality=info.get("quality"))  # checkpoints from before the fitted gate have none
    if manifest.quality:
        report["quality"] = manifest.quality
        log(describe_gate_fit(manifest.quality))
    report["files"] = sorted(files)
    report["seconds"] = round(time.perf_counter() - t_start, 2)
    _write_json(report_path, report)
    write_manifest(out, manifest)
    return report
