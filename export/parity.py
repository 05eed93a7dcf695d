"""Parity of the exported bundle with the torch model, checked by export itself.

1. Graph parity (check_graph_parity): onnxruntime against torch on at least three DIFFERENT real frames:
   FP32 probabilities of the global and part logits within 1e-4, boxes equal, heatmap and box scores
   within 1e-4, pooled global features (the novelty score's input, where the graph has them) within
   1e-4 relative to their largest magnitude. The one accepted box difference is a near-tie (is_tie: a neighbouring heatmap cell
   whose window mean equals the pick's within 1e-5, as on the flat heatmap of an untrained model); it
   is counted in the report as box_ties. A graph whose tracer froze data-dependent values (boxes computed outside the graph)
   gives the same boxes for every frame, and fails here.
2. Runtime parity (check_runtime_parity): the scanner's whole path -- numpy preprocessing, global graph,
   host crops from the full-resolution frame (edge_runtime.roi.crop_rois), parts graph, vote -- gives
   the torch model's final probability within 1e-3 on a folder of images.

Frames are F x F x 3 uint8 RGB from edge_runtime.preprocess (load_frame / prepare_frame).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from calibration.accuracy import OrtPipeline, make_session
from edge_runtime import names
from edge_runtime.preprocess import PreprocessConfig, global_input, load_frame, prepare_frame, to_nchw
from edge_runtime.roi import crop_rois, softmax
from export import ExportError

PROB_TOL = 1e-4
RUNTIME_TOL = 1e-3
MIN_INPUTS = 3
FEATURE_TOL = 1e-4  # max |torch - onnx| / max(1, max |torch|) of the pooled global features
TIE_TOL = 1e-5  # box scores (window means of the heatmap) this close are a tie for argmax


def synthetic_frames(cfg: PreprocessConfig, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` different frames of the embedded synthetic dataset (both classes), prepared with `cfg`:
    used only when the caller gives no image folder."""
    from train.data.synth import render_sample
    from train.data.synth_config import SynthConfig

    synth = SynthConfig(size=max(128, cfg.frame_size), seed=seed)
    return [prepare_frame(render_sample(synth, i, i % 2)[0], cfg) for i in range(count)]


def frames_from(paths: list[Path], cfg: PreprocessConfig) -> list[np.ndarray]:
    return [load_frame(p, cfg) for p in paths]


def _check_distinct(frames: list[np.ndarray]) -> None:
    if len(frames) < MIN_INPUTS:
        raise ExportError(f"parity needs at least {MIN_INPUTS} frames, got {len(frames)}")
    digests = {hashlib.sha256(f.tobytes()).hexdigest() for f in frames}
    if len(digests) < len(frames):
        raise ExportError("parity frames must all be different images")


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))) if np.size(a) else 0.0


def check_graph_parity(model: torch.nn.Module, global_path: str | Path, parts_path: str | Path,
                       frames: list[np.ndarray]) -> dict:
    """Compare global/parts ONNX files with model.global_forward/parts_forward frame by frame.

    Returns {"passed": bool, "inputs": n, "max": {...worst errors...}, "per_input": [...],
    "failures": [sentences]}. The crops fed to both parts graphs come from the torch boxes.
    """
    _check_distinct(frames)
    cfg = model.cfg.preprocess
    g_sess, p_sess = make_session(global_path), make_session(parts_path)
    has_features = names.GLOBAL_FEATURES in [o.name for o in g_sess.get_outputs()]
    per_input, failures = [], []
    box_sets = []
    ties = 0
    for i, frame in enumerate(frames):
        image = global_input(frame, cfg)
        with torch.no_grad():
            t_logits, t_heat, t_boxes, t_scores, t_feats = (
                t.numpy() for t in model.global_forward_features(torch.from_numpy(image)))
        wanted = names.EXPORTED_GLOBAL_OUTPUTS if has_features else names.GLOBAL_OUTPUTS
        o_logits, o_heat, o_boxes, o_scores, *o_feats = g_sess.run(list(wanted), {names.GLOBAL_INPUT: image})
        crops = crop_rois(frame, t_boxes[0], cfg.crop_size)
        with torch.no_grad():
            t_parts = model.parts_forward(torch.from_numpy(crops)).numpy()
        (o_parts,) = p_sess.run([names.PART_LOGITS], {names.PARTS_INPUT: crops})
        row = {
            "global_prob": _max_abs(softmax(t_logits), softmax(o_logits)),
            "heatmap": _max_abs(t_heat, o_heat),
            "box_scores": _max_abs(t_scores, o_scores),
            "boxes": _max_abs(t_boxes, o_boxes),
            "part_prob": _max_abs(softmax(t_parts), softmax(o_parts)),
        }
        if has_features:
            row["features"] = _max_abs(t_feats, o_feats[0]) / max(1.0, float(np.abs(t_feats).max()))
            if not row["features"] <= FEATURE_TOL:
                failures.append(f"input {i}: global features differ by {row['features']:.3g} (> {FEATURE_TOL})")
        per_input.append(row)
        box_sets.append(t_boxes.tobytes())
        for key in ("global_prob", "heatmap", "box_scores", "part_prob"):
            if not row[key] <= PROB_TOL:
                failures.append(f"input {i}: {key} differs by {row[key]:.3g} (> {PROB_TOL})")
        if not np.array_equal(t_boxes, o_boxes):
            if is_tie(t_boxes, o_boxes, t_scores, o_scores, t_heat.shape[-1]):
                ties += 1
            else:
                failures.append(f"input {i}: boxes differ (max {row['boxes']:.3g}): the graph may have frozen "
                                "data-dependent values")
    worst = {k: max(r[k] for r in per_input) for k in per_input[0]}
    return {"passed": not failures, "inputs": len(frames), "distinct_torch_boxes": len(set(box_sets)),
            "box_ties": ties,
            "tolerance": PROB_TOL, "max": worst, "per_input": per_input, "failures": failures}


def is_tie(t_boxes: np.ndarray, o_boxes: np.ndarray, t_scores: np.ndarray, o_scores: np.ndarray,
           heat_side: int) -> bool:
    """True when boxes [1,K,4] differ only by a near-tie of the peak picking: every differing box is at
    most one heatmap cell from torch's (normalised distance <= 1.5 / heat_side) and its box score equals
    torch's within TIE_TOL, i.e. two neighbouring windows of an almost flat heatmap swapped ranks under
    float rounding. A graph that froze its boxes puts them anywhere and fails this."""
    moved = np.abs(t_boxes - o_boxes).max(-1) > 0  # [1,K]
    near = np.abs(t_boxes - o_boxes).max() <= 1.5 / heat_side
    same_score = np.abs(t_scores - o_scores)[moved].max() <= TIE_TOL
    return bool(near and same_score)


def torch_probability(model: torch.nn.Module, frame: np.ndarray, positive_index: int) -> float:
    """The torch model's final P(positive) on one frame (global view + full-resolution frame)."""
    cfg = model.cfg.preprocess
    with torch.no_grad():
        out = model(torch.from_numpy(global_input(frame, cfg)), torch.from_numpy(to_nchw(frame)))
        return float(torch.softmax(out["logits"], -1)[0, positive_index])


def check_runtime_parity(model: torch.nn.Module, pipeline: OrtPipeline, frames: list[np.ndarray],
                         positive_index: int) -> dict:
    """Final probability of the runtime path (pipeline) against torch on each frame, within 1e-3."""
    diffs = []
    for frame in frames:
        diffs.append(abs(pipeline.run_frame(frame).probability - torch_probability(model, frame, positive_index)))
    worst = max(diffs) if diffs else 0.0
    failures = [f"frame {i}: final probability differs by {d:.3g} (> {RUNTIME_TOL})"
                for i, d in enumerate(diffs) if not d <= RUNTIME_TOL]
    return {"passed": bool(diffs) and not failures, "frames": len(frames), "tolerance": RUNTIME_TOL,
            "max_abs_prob_diff": worst, "failures": failures}
