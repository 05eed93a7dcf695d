"""Scan sessions: good frames of one item aggregate into one final verdict.

A session collects P(counterfeit) of frames that passed the quality gate. It ends
- early, as soon as it is confident: at least `min_frames` frames and the running aggregate outside
  the abstain band by `margin` (>= counterfeit_at + margin, or <= genuine_at - margin);
- at `session_frames` frames;
- when the item in view changes (grey-histogram change against the session's first frame), after a
  gap of `gap_s` seconds without a good frame, or on an explicit trigger (`new_session()`, called by
  the HTTP API or a key, from any thread); a session that had frames but no verdict yet then gets
  its verdict from the frames it has.
The final verdict is the manifest's Thresholds applied to the aggregate: genuine / counterfeit /
uncertain; or `unknown` when most of the session's frames were unknown (edge_runtime.novelty: the item
is not what the scanner was trained on). Unknown frames do not enter the aggregate; a session ends
early as `unknown` once at least `min_frames` frames are unknown and they are the majority. After its
verdict a session ignores further frames of the same item until a new one starts.

Aggregation: "mean" (mean probability) or "logodds" (mean log-odds, mapped back by the sigmoid, which
lets a few very confident frames outweigh many lukewarm ones).
"""

from __future__ import annotations

import math
import threading
import uuid
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_runtime.novelty import UNKNOWN
from edge_runtime.roi import Thresholds

AGGREGATES = ("mean", "logodds")
_CLIP = 1e-6


@dataclass(frozen=True)
class SessionConfig:
    """session_frames: most frames per session. min_frames: fewest frames before an early stop.
    margin: how far outside the abstain band the aggregate must be for an early stop.
    aggregate: "mean" | "logodds". change_threshold: Bhattacharyya distance of grey histograms that
    means "another item" (None disables). gap_s: seconds without a good frame that end a session
    (None disables)."""

    session_frames: int = 15
    min_frames: int = 3
    margin: float = 0.05
    aggregate: str = "mean"
    change_threshold: float | None = 0.35
    gap_s: float | None = 2.0

    def __post_init__(self) -> None:
        if self.session_frames < 1 or not 1 <= self.min_frames <= self.session_frames:
            raise ValueError("session: need session_frames >= 1 and 1 <= min_frames <= session_frames")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"session.aggregate must be one of {AGGREGATES}")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError("session.margin must be in [0, 0.5)")


@dataclass
class Verdict:
    """A finished session. evidence: the BGR frame with the highest P(counterfeit) (a reference, not a
    copy) and its frame index."""

    session: str
    verdict: str
    probability: float
    frames_used: int
    reason: str
    item: str | None
    frame: int
    evidence: np.ndarray | None = field(default=None, repr=False)


def aggregate(probs: list[float], how: str) -> float:
    """Combine per-frame P(counterfeit) values into one."""
    if how == "mean":
        return float(sum(probs) / len(probs))
    logits = [math.log(p / (1 - p)) for p in (min(max(q, _CLIP), 1 - _CLIP) for q in probs)]
    return 1.0 / (1.0 + math.exp(-sum(logits) / len(logits)))


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Bhattacharyya distance of two normalised histograms (0 same, 1 disjoint)."""
    return float(cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


class SessionTracker:
    """Turns a stream of good frames into session verdicts. Used from the scanner's loop thread;
    `new_session()` may be called from any thread (it takes effect at the next frame)."""

    def __init__(self, cfg: SessionConfig, thresholds: Thresholds) -> None:
        self.cfg = cfg
        self.thresholds = thresholds
        self._lock = threading.Lock()
        self._pending: str | None = None
        self.session_id = ""
        self.count = 0
        self._reset()

    def _reset(self) -> None:
        self._probs: list[float] = []  # every frame's P(counterfeit)
        self._known: list[float] = []  # those of frames that were not unknown
        self._reference: np.ndarray | None = None
        self._last_good: float | None = None
        self._best_p = -1.0
        self._evidence: np.ndarray | None = None
        self._evidence_frame = -1
        self._item: str | None = None
        self._last_frame = -1
        self.done = False

    @property
    def frames(self) -> int:
        return len(self._probs)

    def new_session(self, reason: str = "trigger") -> None:
        """Ask for a new session (thread-safe); the current one is finished at the next frame."""
        with self._lock:
            self._pending = reason

    def _start(self) -> None:
        self._reset()
        self.count += 1
        self.session_id = uuid.uuid4().hex[:12]

    def _finish(self, reason: str) -> Verdict | None:
        """Verdict of the current session from the frames it has (None if it has none or had one)."""
        if self.done or not self._probs:
            return None
        p = aggregate(self._known or self._probs, self.cfg.aggregate)
        verdict = UNKNOWN if self._mostly_unknown else self.thresholds.decide(p)
        self.done = True
        return Verdict(self.session_id, verdict, p, len(self._probs), reason, self._item,
                       self._evidence_frame if self._evidence_frame >= 0 else self._last_frame,
                       self._evidence)

    def boundary(self, ts: float, hist: np.ndarray | None = None, item: str | None = None,
                 item_changed: bool = False) -> list[Verdict]:
        """Check, before a frame is used, whether a new session starts (trigger, new item, histogram
        change, gap). Returns the verdict of the session that this ends, if it had frames and no verdict."""
        with self._lock:
            reason, self._pending = self._pending, None
        if reason is None:
            if not self.session_id:
                reason = "start"
            elif item_changed:
                reason = "new item"
            elif (self.cfg.gap_s is not None and self._last_good is not None
                  and ts - self._last_good > self.cfg.gap_s):
                reason = "gap"
            elif (self.cfg.change_threshold is not None and hist is not None and self._reference is not None
                  and histogram_distance(self._reference, hist) > self.cfg.change_threshold):
                reason = "item changed"
        if reason is None:
            return []
        out = self._finish(reason)
        self._start()
        self._item = item
        return [out] if out is not None else []

    @property
    def _mostly_unknown(self) -> bool:
        return 2 * (len(self._probs) - len(self._known)) > len(self._probs)

    def add(self, probability: float, ts: float, frame: int, hist: np.ndarray | None = None,
            evidence: np.ndarray | None = None, unknown: bool = False) -> Verdict | None:
        """Add one good frame's P(counterfeit), and whether the frame was unknown. Returns the verdict
        when this frame ends the session (confident, or the frame limit); None otherwise or when the
        session already has its verdict."""
        if not self.session_id:
            self.boundary(ts, hist)
        self._last_good = ts
        self._last_frame = frame
        if self.done:
            return None
        if self._reference is None and hist is not None:
            self._reference = hist
        self._probs.append(float(probability))
        if not unknown:
            self._known.append(float(probability))
        if probability > self._best_p:
            self._best_p, self._evidence, self._evidence_frame = float(probability), evidence, frame
        n = len(self._probs)
        if self._mostly_unknown and n - len(self._known) >= self.cfg.min_frames:
            return self._finish("confident")
        if len(self._known) >= self.cfg.min_frames and not self._mostly_unknown:
            p = aggregate(self._known, self.cfg.aggregate)
            th, m = self.thresholds, self.cfg.margin
            if p >= min(th.counterfeit_at + m, 1.0) or p <= max(th.genuine_at - m, 0.0):
                return self._finish("confident")
        if n >= self.cfg.session_frames:
            return self._finish("frame limit")
        return None

    def flush(self, reason: str = "end of stream") -> Verdict | None:
        """Finish the current session at the end of the stream or on shutdown."""
        return self._finish(reason)
