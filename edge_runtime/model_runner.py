"""The per-frame model: camera frame -> probability, decision, boxes, heatmap and per-stage timings.

    runner = ModelRunner.open(bundle, backend="auto", precision=None)
    result = runner.run_frame(bgr)          # HxWx3 uint8 BGR, any size >= 32 px
    # or in two steps, so the preprocessing of the next frame can run beside the graphs (prefetch.py):
    result = runner.run_prepared(runner.prepare(bgr))

Stages (all maths lives in preprocess.py and roi.py; this module only sequences them):
    preprocess  prepare_frame -> F x F x 3 uint8 RGB, global_input -> 1x3xSxS float32
    global      global graph -> global_logits [1,C], heatmap [1,1,h,w], boxes [1,K,4], box_scores [1,K]
    crop        crop_rois(frame, boxes[0], R) -> K x 3 x R x R float32 (from the full-res F x F frame)
    parts       parts graph -> part_logits [K,C]
    vote        vote_logits -> softmax -> P(counterfeit) -> Thresholds.decide
    novelty     with the bundle's novelty table (edge_runtime.novelty): the score of global_features
                [1,D]; above its threshold the decision is "unknown" (not what this scanner was trained
                on). 0 ms without a table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edge_runtime import names
from edge_runtime.bundle.manifest import Bundle
from edge_runtime.errors import BackendError, BundleError
from edge_runtime.inference.backends import Backend, open_backend
from edge_runtime.novelty import UNKNOWN, NoveltyTable, load_table
from edge_runtime.preprocess import global_input, prepare_frame, to_bgr8
from edge_runtime.roi import crop_rois, softmax, vote_logits

STAGES = ("preprocess", "global", "crop", "parts", "vote", "novelty")


@dataclass
class FrameResult:
    """One frame's model output.

    probability: P(counterfeit) (float). decision: "genuine" | "counterfeit" | "uncertain" | "unknown".
    probs: [C] float32 class probabilities. boxes: [K,4] float32 normalised xyxy of the square model
    frame. box_scores: [K] float32. heatmap: [h,w] float32 in [0,1]. timings_ms: {stage: ms} for STAGES.
    frame_shape: (H, W) of the source frame (for mapping boxes back to source pixels).
    novelty: the novelty score (float), or None when the bundle has no novelty table.
    """

    probability: float
    decision: str
    probs: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    heatmap: np.ndarray
    timings_ms: dict
    frame_shape: tuple[int, int]
    novelty: float | None = None


NO_NOVELTY = ("this bundle has no novelty table (exported before the `unknown` answer): it cannot refuse "
              "items unlike its training set; re-export it from a new checkpoint")


@dataclass
class PreparedFrame:
    """A frame ready for the graphs. frame: F x F x 3 uint8 RGB (prepare_frame); x: 1x3xSxS float32
    (global_input); source_shape: (H, W) of the source frame; preprocess_ms: time prepare() took."""

    frame: np.ndarray
    x: np.ndarray
    source_shape: tuple[int, int]
    preprocess_ms: float


class ModelRunner:
    """Runs one bundle's two graphs on frames. Reads the manifest once, at construction."""

    def __init__(self, bundle: Bundle, global_backend: Backend, parts_backend: Backend | None) -> None:
        m = bundle.manifest
        self.bundle = bundle
        self.model_id = bundle.model_id
        self.cfg = m.preprocess
        self.k = m.k
        self.use_parts = m.use_parts
        self.global_weight = m.global_weight
        self.thresholds = m.thresholds
        self.positive = m.positive_index
        self.global_backend = global_backend
        self.parts_backend = parts_backend if m.use_parts else None
        if m.use_parts and parts_backend is None:
            raise BundleError("this bundle votes with parts: a parts backend is needed")
        self._check_names(global_backend, (names.GLOBAL_INPUT,), names.GLOBAL_OUTPUTS, "global")
        if self.parts_backend is not None:
            self._check_names(self.parts_backend, (names.PARTS_INPUT,), names.PARTS_OUTPUTS, "parts")
        self._boxes_shape = (1, m.k, 4)
        # an INT8 file that did not pass its export gate is named in every event's `model` (events.py)
        label = global_backend.int8_label or (self.parts_backend.int8_label if self.parts_backend else "")
        self.model_record = f"{self.model_id}+{label}" if label else self.model_id
        backends = [b for b in (global_backend, self.parts_backend) if b is not None]
        self.precision_notes = list(dict.fromkeys(b.note for b in backends if b.note))  # once each, in order
        self.novelty = self._novelty_table(bundle, global_backend)
        # one-line messages for the user (mgfen-scan prints them once, to stderr)
        self.notices: list[str] = [] if self.novelty is not None else [NO_NOVELTY]

    @staticmethod
    def _novelty_table(bundle: Bundle, backend: Backend) -> NoveltyTable | None:
        """The bundle's novelty table, or None for a bundle without one (or whose graph lacks the
        features output it scores)."""
        name = bundle.manifest.file_for(names.NOVELTY)
        if name is None or names.GLOBAL_FEATURES not in backend.output_names:
            return None
        return load_table(bundle.path(name))

    @staticmethod
    def _check_names(backend: Backend, inputs: tuple, outputs: tuple, graph: str) -> None:
        missing = [n for n in inputs if n not in backend.input_names]
        missing += [n for n in outputs if n not in backend.output_names]
        if missing:
            raise BundleError(f"{graph} graph ({backend.name}) lacks tensors {missing}; it has inputs "
                              f"{list(backend.input_names)} and outputs {list(backend.output_names)}")

    @classmethod
    def open(cls, bundle: Bundle, backend: str = "auto", precision: str | None = None,
             threads: int | None = None, spin: bool = False) -> "ModelRunner":
        """Open both graphs with open_backend; closes what it opened if the second one fails."""
        g = open_backend(bundle, "global", backend, precision, threads, spin)
        try:
            p = open_backend(bundle, "parts", backend, precision, threads, spin) if bundle.manifest.use_parts else None
            return cls(bundle, g, p)
        except BaseException:
            g.close()
            raise

    @property
    def backend_names(self) -> list[str]:
        return [b.name for b in (self.global_backend, self.parts_backend) if b is not None]

    def prepare(self, frame_bgr: np.ndarray) -> PreparedFrame:
        """The preprocess stage alone (thread-safe: it only reads the manifest's config). A frame of the
        wrong type/shape raises ImageError."""
        t0 = time.perf_counter()
        bgr = to_bgr8(frame_bgr, "frame")
        frame = prepare_frame(bgr, self.cfg)
        x = global_input(frame, self.cfg)
        return PreparedFrame(frame, x, bgr.shape[:2], (time.perf_counter() - t0) * 1e3)

    def run_frame(self, frame_bgr: np.ndarray) -> FrameResult:
        """HxWx3 uint8 BGR frame -> FrameResult. A frame of the wrong type/shape raises ImageError; a
        graph whose outputs break the contract raises BackendError."""
        return self.run_prepared(self.prepare(frame_bgr))

    def run_prepared(self, prepared: PreparedFrame) -> FrameResult:
        """The graph stages (global, crop, parts, vote, novelty) on a prepared frame; timings include its
        preprocess_ms."""
        frame, x = prepared.frame, prepared.x
        t1 = time.perf_counter()
        g = self.global_backend.infer({names.GLOBAL_INPUT: x})
        boxes = g[names.BOXES]
        if boxes.shape != self._boxes_shape:
            raise BackendError(f"global graph returned boxes of shape {boxes.shape}, expected "
                               f"{self._boxes_shape}")
        box_scores = g[names.BOX_SCORES][0]
        t2 = time.perf_counter()
        part_logits = None
        t3 = t4 = t2
        if self.parts_backend is not None:
            crops = crop_rois(frame, boxes[0], self.cfg.crop_size)
            t3 = time.perf_counter()
            part_logits = self.parts_backend.infer({names.PARTS_INPUT: crops})[names.PART_LOGITS]
            t4 = time.perf_counter()
        logits = vote_logits(g[names.GLOBAL_LOGITS][0], part_logits, box_scores, self.global_weight,
                             self.use_parts)
        probs = softmax(np.asarray(logits, dtype=np.float32))
        p = float(probs[self.positive])
        decision = self.thresholds.decide(p)
        t5 = t6 = time.perf_counter()  # no table: the novelty stage is 0 ms
        novelty = None
        if self.novelty is not None:
            features = g[names.GLOBAL_FEATURES]
            if features.size != self.novelty.dim:
                raise BackendError(f"global graph returned {features.size} features; the novelty table "
                                   f"has {self.novelty.dim}")
            novelty = self.novelty.score(features.reshape(-1))
            if self.novelty.is_unknown(novelty):
                decision = UNKNOWN
            t6 = time.perf_counter()
        timings = {"preprocess": prepared.preprocess_ms, "global": (t2 - t1) * 1e3, "crop": (t3 - t2) * 1e3,
                   "parts": (t4 - t3) * 1e3, "vote": (t5 - t4) * 1e3, "novelty": (t6 - t5) * 1e3}
        return FrameResult(p, decision, probs, boxes[0], box_scores, g[names.HEATMAP][0, 0], timings,
                           prepared.source_shape, novelty)

    def close(self) -> None:
        for b in (self.global_backend, self.parts_backend):
            if b is not None:
                b.close()

    def __enter__(self) -> "ModelRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
