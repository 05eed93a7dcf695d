"""The INT8 gate on what the field sees: INT8 against FP32 per image, at the bundle's thresholds.

For every labelled val image, FP32 and each INT8 flavour run the whole runtime path (calibration.accuracy
OrtPipeline; the TensorRT flavour Q/DQ simulated, as TensorRT computes it) and the verdict comes from the
scanner's own rule, edge_runtime.roi.Thresholds.decide. Per flavour: verdict agreement with FP32, accuracy
(the verdict equals the label; uncertain counts as wrong, as the scanner's summary counts it), its drop
against FP32's in points, argmax accuracy (as the gate before this one measured), and |dP| and |d log-odds|
of P(counterfeit) at p50 / p99 / max. With the bundle's novelty table (edge_runtime.novelty) each
flavour's own global_features output is scored too, and a frame above the table's threshold is
`unknown`, as the scanner decides it: a frame unknown in FP32 but not in INT8 (or the other way) is a
changed verdict, and unknown counts as wrong in the accuracy, as uncertain does. The `novelty` numbers:
|d score| / threshold at p50 / p99 / max, whether its p99 is within NOVELTY_TOLERANCE (reported, not
gated: the unknown decisions are), and the agreement of the unknown decision. A flavour passes when
agreement >= min_agreement and the drop <= max_drop_points. The record (edge_runtime.bundle.int8_gate)
goes into the manifest.

For scale, FP32 is also compared with itself on the same frames plus seeded Gaussian pixel noise of
REPEAT_NOISE grey levels (the prepared frame's uint8 values; a second capture of the item differs by at
least that much). Not gated: it says whether a failing flavour is up against the model's own
repeatability. On the real-data models (docs/results/int8_instability.md) FP32 kept 87.5-96.8% of its
genuine / counterfeit / uncertain verdicts under that noise, about what the INT8 flavours kept (with the
novelty table the BHSig model kept 28.7%: its binary scans make any noise look unknown), so no INT8 file
can reach a 99% agreement there; the failure line then says so. The numbers go into the export's
report.json, not the manifest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from calibration import CalibrationError
from edge_runtime.bundle.int8_gate import FAILED_FORCED, MAX_DROP_POINTS, MIN_AGREEMENT, PASSED, UNVERIFIED
from edge_runtime.bundle.manifest import sha256_file
from edge_runtime.novelty import UNKNOWN, NoveltyTable
from edge_runtime.preprocess import PreprocessConfig, load_frame
from edge_runtime.roi import Thresholds

# |d score| / threshold (p99) within which an INT8 flavour's novelty score counts as FP32's: a frame this
# close to the threshold may change its unknown decision, which the verdict agreement then counts
NOVELTY_TOLERANCE = 0.1
REPEAT_NOISE = 1.0  # grey levels (Gaussian sigma) of the pixel noise of FP32's repeatability check
REPEAT_KEY = "fp32+noise"  # score_images' key of that check

if TYPE_CHECKING:  # calibration.accuracy imports onnxruntime; mgfen-export reads the defaults below without it
    from calibration.accuracy import OrtPipeline


@dataclass(frozen=True)
class GateCriteria:
    """What a flavour must reach: agreement >= min_agreement (0..1), drop <= max_drop_points (points)."""

    min_agreement: float = MIN_AGREEMENT
    max_drop_points: float = MAX_DROP_POINTS

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise CalibrationError(f"--min-int8-agreement must be in [0, 1], got {self.min_agreement}")
        if self.max_drop_points < 0:
            raise CalibrationError(f"--max-int8-drop must be >= 0, got {self.max_drop_points}")

    def to_dict(self) -> dict:
        return {"min_agreement": self.min_agreement, "max_drop_points": self.max_drop_points}


@dataclass(frozen=True)
class Scores:
    """One pipeline on N images: probs [N] float64 P(positive), log_odds [N] float64 log P/(1-P) from the
    final logits (exact, no clipping), argmax [N] int64 class index, novelty [N] float64 novelty scores
    of the pipeline's own pooled features (None without a novelty table)."""

    probs: np.ndarray
    log_odds: np.ndarray
    argmax: np.ndarray
    novelty: np.ndarray | None = None


def positive_log_odds(logits: np.ndarray, positive: int) -> float:
    """log(P / (1 - P)) of class `positive` from final logits [C] (any float dtype), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    others = np.delete(z, positive)
    top = others.max()
    return float(z[positive] - (top + np.log(np.exp(others - top).sum())))


def scores_of(results: list, positive: int, novelty: NoveltyTable | None = None, name: str = "") -> Scores:
    """Scores of one pipeline from its FrameResults (calibration.accuracy) on N frames, in order. With
    `novelty`, the frames' global_features are scored with it (CalibrationError naming `name` when the graph
    lacks them)."""
    scored = None
    if novelty is not None:
        bad = next((r for r in results if r.features is None or r.features.size != novelty.dim), None)
        if bad is not None:
            got = "none" if bad.features is None else bad.features.size
            raise CalibrationError(f"{name} global graph gives {got} pooled features; the novelty table scores "
                                   f"{novelty.dim}")
        scored = novelty.score(np.stack([r.features for r in results])) if results else None
    return Scores(np.array([r.probability for r in results], np.float64),
                  np.array([positive_log_odds(r.logits, positive) for r in results], np.float64),
                  np.array([int(np.argmax(r.logits)) for r in results], np.int64), scored)


def noisy(frame: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """F x F x 3 uint8 frame plus Gaussian noise of `sigma` grey levels, rounded and clipped to uint8."""
    return np.clip(np.rint(frame + rng.normal(0.0, sigma, frame.shape)), 0, 255).astype(np.uint8)


def score_images(pipelines: dict[str, OrtPipeline], paths: list[Path], cfg: PreprocessConfig,
                 positive: int, novelty: NoveltyTable | None = None, repeat_noise: float = 0.0,
                 seed: int = 0) -> dict[str, Scores]:
    """Run every pipeline on the same frames (load_frame of each path, in order, each loaded once) and
    score them (scores_of). With repeat_noise > 0 the "fp32" pipeline also runs on each frame plus that
    much noise (`noisy`, seeded), scored under REPEAT_KEY."""
    results: dict[str, list] = {k: [] for k in pipelines}
    repeat = repeat_noise > 0 and "fp32" in pipelines
    if repeat:
        results[REPEAT_KEY] = []
    rng = np.random.default_rng(seed)
    for path in paths:
        frame = load_frame(path, cfg)
        for key, pipe in pipelines.items():
            results[key].append(pipe.run_frame(frame))
        if repeat:
            results[REPEAT_KEY].append(pipelines["fp32"].run_frame(noisy(frame, repeat_noise, rng)))
    return {k: scores_of(results[k], positive, novelty, k) for k in results}


def _spread(values: np.ndarray) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 6), "p99": round(float(np.percentile(values, 99)), 6),
            "max": round(float(values.max()), 6)}


def novelty_numbers(ref: np.ndarray, other: np.ndarray, threshold: float) -> dict:
    """ref, other [N] float novelty scores (FP32, INT8) -> the flavour's `novelty` record: the threshold,
    |d score| / threshold at p50 / p99 / max (abs_dscore_rel), the agreement of the unknown decision
    (score > threshold), how many frames changed it, and how many each precision calls unknown."""
    u_ref, u_other = ref > threshold, other > threshold
    rel = _spread(np.abs(other - ref) / max(abs(float(threshold)), 1e-12))
    return {"threshold": round(float(threshold), 6), "abs_dscore_rel": rel, "tolerance": NOVELTY_TOLERANCE,
            "within_tolerance": bool(rel["p99"] <= NOVELTY_TOLERANCE),
            "unknown_agreement": round(float(np.mean(u_ref == u_other)), 6),
            "unknown_changed": int(np.sum(u_ref != u_other)),
            "fp32_unknown": int(np.sum(u_ref)), "unknown": int(np.sum(u_other))}


def compare_verdicts(ref: Scores, other: Scores, labels: np.ndarray, thresholds: Thresholds,
                     positive: int, novelty_threshold: float | None = None) -> dict:
    """The numbers of one INT8 flavour (`other`) against FP32 (`ref`); labels [N] int class indices.
    With `novelty_threshold` and both Scores' novelty, a frame scoring above it is `unknown` (verdicts,
    agreement and accuracy) and the record's `novelty` has novelty_numbers; else `novelty` is None."""
    scored = novelty_threshold is not None and ref.novelty is not None and other.novelty is not None

    def verdicts(scores: Scores) -> np.ndarray:
        v = np.array([thresholds.decide(float(p)) for p in scores.probs], dtype=object)
        if scored:
            v[scores.novelty > novelty_threshold] = UNKNOWN
        return v

    truth = np.where(labels == positive, "counterfeit", "genuine")
    v_ref, v_other = verdicts(ref), verdicts(other)
    acc_ref, acc = float(np.mean(v_ref == truth)), float(np.mean(v_other == truth))
    arg_ref, arg = float(np.mean(ref.argmax == labels)), float(np.mean(other.argmax == labels))
    return {"n": int(len(labels)), "agreement": round(float(np.mean(v_ref == v_other)), 6),
            "verdicts_changed": int(np.sum(v_ref != v_other)),
            "accuracy": round(acc, 6), "fp32_accuracy": round(acc_ref, 6),
            "drop_points": round(100.0 * (acc_ref - acc), 4),
            "argmax_accuracy": round(arg, 6), "argmax_drop_points": round(100.0 * (arg_ref - arg), 4),
            "abs_dp": _spread(np.abs(other.probs - ref.probs)),
            "abs_dlogodds": _spread(np.abs(other.log_odds - ref.log_odds)),
            "novelty": novelty_numbers(ref.novelty, other.novelty, novelty_threshold) if scored else None}


def judge(numbers: dict, criteria: GateCriteria, repeat: dict | None = None) -> str | None:
    """None when the numbers pass the criteria, else one line saying what failed. `repeat`: FP32's numbers
    against itself under noise (compare_verdicts), named when they miss the agreement criterion too."""
    failed = []
    if numbers["agreement"] < criteria.min_agreement:
        unknown = (numbers.get("novelty") or {}).get("unknown_changed", 0)
        failed.append(f"verdicts equal FP32's on {100 * numbers['agreement']:.1f}% of {numbers['n']} val images "
                      f"(< {100 * criteria.min_agreement:g}%)"
                      + (f", {unknown} of them unknown in one precision only" if unknown else ""))
        if repeat is not None and repeat["agreement"] < criteria.min_agreement:
            failed.append(f"FP32 itself keeps {100 * repeat['agreement']:.1f}% of its verdicts under "
                          f"{repeat['noise']:g} grey level of pixel noise: the model's verdicts at these thresholds are "
                          "not repeatable to that degree, whatever the precision")
    if numbers["drop_points"] > criteria.max_drop_points:
        failed.append(f"accuracy drop {numbers['drop_points']:.2f} points (> {criteria.max_drop_points:g})")
    return "; ".join(failed) or None


def _novelty_summary(nov: dict | None) -> str:
    if nov is None:
        return ""
    d = nov["abs_dscore_rel"]
    within = "within" if nov["within_tolerance"] else "beyond"
    return (f", novelty |d score|/threshold p50 {d['p50']:.2g} p99 {d['p99']:.2g} max {d['max']:.2g} ({within} "
            f"{nov['tolerance']:g}), unknown {100 * nov['unknown_agreement']:.1f}% equal ({nov['unknown']} vs "
            f"FP32's {nov['fp32_unknown']})")


def images_record(folder: Path, paths: list[Path]) -> dict:
    """Which images the numbers came from: folder (last two parts), count, paths relative to it, and
    one sha256 over the sorted "sha256  relative path" lines (recomputable from the folder)."""
    rel = [p.relative_to(folder).as_posix() for p in paths]
    lines = sorted(f"{sha256_file(p)}  {r}" for p, r in zip(paths, rel))
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    return {"folder": "/".join(folder.resolve().parts[-2:]), "n": len(paths), "sha256": digest, "paths": rel}


def unverified_record(flavours: tuple[str, ...], criteria: GateCriteria, reason: str) -> dict:
    """The record of an export that measured nothing (no labelled val split)."""
    return {"criteria": criteria.to_dict(), "images": None,
            "flavours": {f: {"status": UNVERIFIED, "reason": reason} for f in flavours}}


@dataclass(frozen=True)
class GateResult:
    """record: the manifest's int8_gate. failure: one line when a flavour failed (None when all passed).
    summary: one line per flavour (and one for FP32's repeatability), for the export's log. repeatability:
    FP32 against itself under REPEAT_NOISE (compare_verdicts numbers plus `noise`), None when not measured."""

    record: dict
    failure: str | None
    summary: list[str]
    repeatability: dict | None = None


def run_gate(fp32: OrtPipeline, int8: dict[str, OrtPipeline], folder: Path, cfg: PreprocessConfig,
             classes: tuple[str, ...], thresholds: Thresholds, positive: int, criteria: GateCriteria,
             force: bool, limit: int | None = None, novelty: NoveltyTable | None = None,
             repeat_noise: float = REPEAT_NOISE) -> GateResult:
    """Gate every INT8 flavour ({flavour: pipeline}) against `fp32` on the labelled images of `folder`
    (`limit`: at most that many, evenly spaced over the sorted list, so both classes stay represented).
    With the bundle's `novelty` table the unknown decision is part of each verdict (module docstring).
    A failing flavour is `failed-forced` with `force`; without it the result's `failure` says why.
    repeat_noise > 0: FP32's repeatability is measured too (module docstring; 0 skips it)."""
    from calibration.accuracy import labelled_images
    from edge_runtime.preprocess import evenly_spaced

    items = evenly_spaced(labelled_images(folder, classes), limit)
    paths = [p for p, _ in items]
    labels = np.array([label for _, label in items], np.int64)
    scores = score_images({"fp32": fp32, **int8}, paths, cfg, positive, novelty, repeat_noise)
    nov_threshold = novelty.threshold if novelty is not None else None
    flavours, summary, failures = {}, [], []
    repeat = None
    if REPEAT_KEY in scores:
        repeat = {**compare_verdicts(scores["fp32"], scores[REPEAT_KEY], labels, thresholds, positive, nov_threshold),
                  "noise": repeat_noise}
        summary.append(f"FP32 against itself under {repeat_noise:g} grey level of pixel noise (for scale, not gated): "
                       f"verdicts {100 * repeat['agreement']:.1f}% equal, |dP| p50 {repeat['abs_dp']['p50']:.2g} "
                       f"p99 {repeat['abs_dp']['p99']:.2g} max {repeat['abs_dp']['max']:.2g}"
                       f"{_novelty_summary(repeat['novelty'])}")
    for flavour in int8:
        numbers = compare_verdicts(scores["fp32"], scores[flavour], labels, thresholds, positive, nov_threshold)
        why = judge(numbers, criteria, repeat)
        numbers["status"] = PASSED if why is None else FAILED_FORCED if force else "failed"  # failed: no bundle
        if why is not None:
            numbers["reason"] = why
            failures.append(f"int8 {flavour}: {why}")
        flavours[flavour] = numbers
        summary.append(f"INT8 {flavour} on {numbers['n']} val images at thresholds {thresholds.genuine_at:g}/"
                       f"{thresholds.counterfeit_at:g}: verdicts {100 * numbers['agreement']:.1f}% equal FP32's, "
                       f"accuracy {100 * numbers['accuracy']:.1f}% (drop {numbers['drop_points']:+.2f} pts), "
                       f"|dP| p50 {numbers['abs_dp']['p50']:.2g} p99 {numbers['abs_dp']['p99']:.2g} "
                       f"max {numbers['abs_dp']['max']:.2g}{_novelty_summary(numbers['novelty'])} -> "
                       f"{'PASS' if why is None else 'FAIL'}")
    record = {"criteria": criteria.to_dict(), "images": images_record(Path(folder), paths), "flavours": flavours}
    failure = "; ".join(failures) if failures and not force else None
    return GateResult(record, failure, summary, repeat)
