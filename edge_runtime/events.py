"""Scanner events: the one definition of their schema, constructors and JSON serialisation.

Every event is a flat JSON object (one line in JSON Lines) with the common keys
    type     "frame" | "verdict" | "retake" | "error"
    session  scan session id (str; "" before the first session)
    frame    source frame index (int; -1 when not tied to a frame)
    ts       unix time in seconds (float)
    model    model id = sha256 of the bundle's manifest.json; "<sha256>+int8-<flavour>-<status>" (e.g.
             +int8-cpu-failed-forced) when an INT8 file that did not pass its export gate runs (int8_gate.py)
and per type (FIELDS below):
    frame    probability, decision ("genuine" | "counterfeit" | "uncertain" | "unknown"), novelty (score,
             null for a bundle without a novelty table), boxes [[x1,y1,x2,y2], ...] in source-frame pixels, box_scores,
             timings_ms {capture, gate, preprocess, global, crop, parts, vote, novelty, total}, quality
             {focus, brightness, clipped}, item (file name or null)
    verdict  verdict "genuine" | "counterfeit" | "uncertain" | "unknown", probability, frames_used, reason
             (why the session ended), item, evidence (path of the saved evidence JPEG or null)
    retake   reason (why the frame was not used), quality {focus, brightness, clipped}, item
    error    message, where ("source" | "gate" | "model" | "session" | "audit" | "sink" | "scanner")
Sinks receive these as plain dicts (`emit(event: dict)`).
"""

from __future__ import annotations

import json
import math
import time

import numpy as np

from edge_runtime.novelty import UNKNOWN
from edge_runtime.roi import boxes_to_source_pixels

EVENT_TYPES = ("frame", "verdict", "retake", "error")
COMMON = ("type", "session", "frame", "ts", "model")
FIELDS = {
    "frame": ("probability", "decision", "novelty", "boxes", "box_scores", "timings_ms", "quality", "item"),
    "verdict": ("verdict", "probability", "frames_used", "reason", "item", "evidence"),
    "retake": ("reason", "quality", "item"),
    "error": ("message", "where"),
}
TIMING_KEYS = ("capture", "gate", "preprocess", "global", "crop", "parts", "vote", "novelty", "total")
VERDICTS = ("genuine", "counterfeit", "uncertain", UNKNOWN)
WHERE = ("source", "gate", "model", "session", "audit", "sink", "scanner")


def _base(kind: str, session: str, frame: int, model: str, ts: float | None) -> dict:
    return {"type": kind, "session": session, "frame": int(frame),
            "ts": round(time.time() if ts is None else ts, 6), "model": model}


def _quality(q) -> dict | None:
    if q is None:
        return None
    return {"focus": round(q.focus, 2), "brightness": round(q.brightness, 2), "clipped": round(q.clipped, 4)}


def frame_event(session: str, frame: int, model: str, result, quality, timings_ms: dict,
                item: str | None = None, ts: float | None = None) -> dict:
    """Event for one classified frame. result: model_runner.FrameResult; quality: QualityResult."""
    h, w = result.frame_shape
    boxes = boxes_to_source_pixels(result.boxes, h, w)
    event = _base("frame", session, frame, model, ts)
    event.update(
        probability=round(result.probability, 6),
        decision=result.decision,
        novelty=None if getattr(result, "novelty", None) is None else round(float(result.novelty), 5),
        boxes=np.round(boxes, 1).tolist(),
        box_scores=np.round(np.asarray(result.box_scores, dtype=np.float64), 5).tolist(),
        timings_ms={k: round(float(timings_ms.get(k, 0.0)), 3) for k in TIMING_KEYS},
        quality=_quality(quality),
        item=item,
    )
    return event


def verdict_event(session: str, frame: int, model: str, verdict: str, probability: float,
                  frames_used: int, reason: str, item: str | None = None, evidence: str | None = None,
                  ts: float | None = None) -> dict:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    event = _base("verdict", session, frame, model, ts)
    event.update(verdict=verdict, probability=round(float(probability), 6), frames_used=int(frames_used),
                 reason=reason, item=item, evidence=evidence)
    return event


def retake_event(session: str, frame: int, model: str, reason: str, quality=None, item: str | None = None,
                 ts: float | None = None) -> dict:
    event = _base("retake", session, frame, model, ts)
    event.update(reason=reason, quality=_quality(quality), item=item)
    return event


def error_event(session: str, frame: int, model: str, message: str, where: str,
                ts: float | None = None) -> dict:
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}, got {where!r}")
    event = _base("error", session, frame, model, ts)
    event.update(message=str(message), where=where)
    return event


def validate_event(event: dict) -> None:
    """ValueError unless `event` has exactly the keys of its type (used by tests and sinks' tests)."""
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    expected = set(COMMON) | set(FIELDS[kind])
    if set(event) != expected:
        raise ValueError(f"{kind} event keys differ: missing {sorted(expected - set(event))}, "
                         f"extra {sorted(set(event) - expected)}")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(event: dict) -> str:
    """One compact JSON line (no newline). Non-finite floats become null so the line stays valid JSON."""
    try:
        return json.dumps(event, separators=(",", ":"), allow_nan=False)
    except ValueError:
        clean = {k: ({kk: _finite(vv) for kk, vv in v.items()} if isinstance(v, dict) else _finite(v))
                 for k, v in event.items()}
        return json.dumps(clean, separators=(",", ":"), allow_nan=True).replace("NaN", "null")
