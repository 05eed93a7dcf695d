"""INT8 against FP32 on a labelled folder, through the whole runtime path.

The runtime path (contracts): frame = prepare_frame(bgr); global graph on global_input(frame);
crops = crop_rois(frame, boxes[0], R); parts graph; logits = vote_logits(...); p = softmax(logits).
OrtPipeline runs exactly that with onnxruntime sessions; compare_precisions runs it per flavour on the
same frames and reports accuracy, the accuracy delta in points and the agreement with FP32.

The TensorRT flavour is scored with its Q/DQ simulated (`simulate_qdq`: onnxruntime's graph optimisations
off, so QuantizeLinear/DequantizeLinear run as operators and every Conv/MatMul runs in FP32 on the
dequantised int8 values). That is what TensorRT computes: int8 products summed exactly. onnxruntime's
fused S8S8 kernels are not a model of it on x86 CPUs without VNNI: they shift the int8 activations to
uint8 and multiply with VPMADDUBSW, whose int16 pair sums saturate. On the demo edge checkpoint the fused
kernels lost 16-22 points where the simulation lost none (0 of 94 images flipped).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime as ort

from calibration import CalibrationError
from edge_runtime import names
from edge_runtime.preprocess import PreprocessConfig, evenly_spaced, global_input, list_images, load_frame
from edge_runtime.roi import crop_rois, softmax, vote_logits


def make_session(path: str | Path, threads: int = 0, simulate_qdq: bool = False) -> ort.InferenceSession:
    """A CPU onnxruntime session; threads > 0 fixes intra_op_num_threads (0: onnxruntime's default).
    simulate_qdq: no graph optimisations, so a QDQ model runs as FP32 ops on int8 values (see above)."""
    opts = ort.SessionOptions()
    if simulate_qdq:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class PipelineParams:
    """What the vote needs besides the graphs (all from the manifest / model config)."""

    preprocess: PreprocessConfig
    global_weight: float
    use_parts: bool
    positive_index: int = 1


@dataclass(frozen=True)
class FrameResult:
    """One frame through the pipeline: final logits [C], P(positive), boxes [K,4], box scores [K], and the
    pooled global features [D] float32 the novelty score reads (None when the graph has no such output)."""

    logits: np.ndarray
    probability: float
    boxes: np.ndarray
    box_scores: np.ndarray
    features: Optional[np.ndarray] = None


class OrtPipeline:
    """global + parts ONNX files run the way the scanner runs them (numpy preprocessing, host crops)."""

    def __init__(self, global_path: str | Path, parts_path: str | Path, params: PipelineParams,
                 threads: int = 0, simulate_qdq: bool = False) -> None:
        self.params = params
        self.global_session = make_session(global_path, threads, simulate_qdq)
        self.parts_session = make_session(parts_path, threads, simulate_qdq) if params.use_parts else None
        outputs = [names.GLOBAL_LOGITS, names.BOXES, names.BOX_SCORES]
        if names.GLOBAL_FEATURES in {o.name for o in self.global_session.get_outputs()}:
            outputs.append(names.GLOBAL_FEATURES)  # bundles exported before the novelty score have none
        self._global_outputs = outputs

    def run_global(self, frame: np.ndarray) -> list:
        """The global graph on frame (F x F x 3 uint8 RGB): [logits [1,C], boxes [1,K,4], box scores [1,K]]
        plus the pooled features [1,D] when the graph has them."""
        return self.global_session.run(self._global_outputs,
                                       {names.GLOBAL_INPUT: global_input(frame, self.params.preprocess)})

    def vote(self, frame: np.ndarray, g_logits: np.ndarray, boxes: np.ndarray,
             scores: np.ndarray) -> tuple[np.ndarray, float]:
        """(final logits [C], P(positive)) of the parts graph on the crops of `frame` at boxes [K,4], voted
        with the global logits [C] and the box scores [K]."""
        p = self.params
        part_logits = None
        if self.parts_session is not None:
            crops = crop_rois(frame, boxes, p.preprocess.crop_size)
            (part_logits,) = self.parts_session.run([names.PART_LOGITS], {names.PARTS_INPUT: crops})
        logits = np.asarray(vote_logits(g_logits, part_logits, scores, p.global_weight, p.use_parts))
        return logits, float(softmax(np.asarray(logits, np.float32))[p.positive_index])

    def run_frame(self, frame: np.ndarray) -> FrameResult:
        """frame: F x F x 3 uint8 RGB (edge_runtime.preprocess.prepare_frame output)."""
        out = self.run_global(frame)
        g_logits, boxes, scores = out[:3]
        features = np.asarray(out[3]).reshape(-1) if len(out) > 3 else None
        logits, prob = self.vote(frame, g_logits[0], boxes[0], scores[0])
        return FrameResult(logits, prob, boxes[0], scores[0], features)


def flavour_pipeline(global_path: str | Path, parts_path: str | Path, params: PipelineParams, flavour: str,
                     threads: int = 0) -> OrtPipeline:
    """The OrtPipeline of one INT8 flavour's files as its target computes them: the "trt" flavour with its
    Q/DQ simulated in FP32 (what TensorRT runs), the "cpu" flavour with onnxruntime's INT8 kernels."""
    return OrtPipeline(global_path, parts_path, params, threads, simulate_qdq=flavour == "trt")


def bundle_pipelines(bundle: str | Path, threads: int = 0) -> tuple:
    """(Manifest, PipelineParams, {"fp32" | "cpu" | "trt": OrtPipeline}) of a bundle folder: FP32 and every
    INT8 flavour the bundle has (flavour_pipeline)."""
    from edge_runtime.bundle.manifest import load_bundle

    root = Path(bundle)
    man = load_bundle(root).manifest
    params = PipelineParams(man.preprocess, man.global_weight, man.use_parts, man.positive_index)
    pipes = {"fp32": OrtPipeline(root / man.file_for("global", "fp32"), root / man.file_for("parts", "fp32"), params,
                                 threads)}
    for flavour in ("cpu", "trt"):
        files = [man.file_for(g, "int8", flavour) for g in names.GRAPHS]
        if None not in files:  # a bundle may lack a flavour
            pipes[flavour] = flavour_pipeline(root / files[0], root / files[1], params, flavour, threads)
    return man, params, pipes


def labelled_images(folder: str | Path, classes: tuple[str, ...] = names.CLASS_NAMES) -> list[tuple[Path, int]]:
    """(path, class index) of every image under `folder` whose parent folder is a class name (sorted).

    Raises CalibrationError when there are none or only one class is present."""
    items = [(p, classes.index(p.parent.name)) for p in list_images(folder) if p.parent.name in classes]
    if not items:
        raise CalibrationError(f"{folder}: no labelled images (expected {'/'.join(classes)} sub-folders)")
    return items


def compare_precisions(pipelines: dict[str, OrtPipeline], reference: str, folder: str | Path,
                       cfg: PreprocessConfig, classes: tuple[str, ...] = names.CLASS_NAMES,
                       limit: int | None = None) -> dict:
    """Run every pipeline on the labelled images of `folder` (same frames for all; `limit`: at most that
    many, evenly spaced over the sorted list) and report, per
    pipeline: accuracy (argmax of the final logits), delta_points (accuracy minus the reference's, in
    percentage points), agreement (fraction of frames with the reference's class) and the largest
    |P(positive) - reference P(positive)|.
    """
    items = evenly_spaced(labelled_images(folder, classes), limit)
    preds: dict[str, list[int]] = {k: [] for k in pipelines}
    probs: dict[str, list[float]] = {k: [] for k in pipelines}
    labels = []
    for path, label in items:
        frame = load_frame(path, cfg)
        labels.append(label)
        for key, pipe in pipelines.items():
            res = pipe.run_frame(frame)
            preds[key].append(int(np.argmax(res.logits)))
            probs[key].append(res.probability)
    y = np.array(labels)
    ref_pred, ref_prob = np.array(preds[reference]), np.array(probs[reference])
    ref_acc = float((ref_pred == y).mean())
    report = {"n": len(items), "folder": str(folder), "reference": reference}
    for key in pipelines:
        pred, prob = np.array(preds[key]), np.array(probs[key])
        acc = float((pred == y).mean())
        report[key] = {"accuracy": round(acc, 6), "delta_points": round(100.0 * (acc - ref_acc), 4),
                       "agreement": round(float((pred == ref_pred).mean()), 6),
                       "max_abs_prob_diff": round(float(np.abs(prob - ref_prob).max()), 6)}
    return report
