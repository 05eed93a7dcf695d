"""Scan sessions: aggregation, early stop, frame limit, new sessions on trigger / item change / gap."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from edge_runtime.quality import QualityConfig, check_frame
from edge_runtime.roi import Thresholds
from edge_runtime.session import SessionConfig, SessionTracker, aggregate
from fake_bundle import make_image

TH = Thresholds(0.3, 0.7)


def _tracker(**kw) -> SessionTracker:
    kw.setdefault("change_threshold", None)
    kw.setdefault("gap_s", None)
    return SessionTracker(SessionConfig(**kw), TH)


def _feed(tr, probs, t0=0.0, dt=0.1, hist=None):
    verdicts = []
    for i, p in enumerate(probs):
        ts = t0 + i * dt
        verdicts += tr.boundary(ts, hist)
        v = tr.add(p, ts, i, hist)
        if v is not None:
            verdicts.append(v)
    return verdicts


def test_aggregate():
    assert aggregate([0.2, 0.4], "mean") == pytest.approx(0.3)
    logodds = aggregate([0.9, 0.5], "logodds")
    assert logodds == pytest.approx(1 / (1 + math.exp(-math.log(9) / 2)))
    assert 0.0 < aggregate([0.0, 1.0, 1.0], "logodds") < 1.0  # clipped, no infinities


def test_early_stop_needs_min_frames_and_margin():
    tr = _tracker(min_frames=3, margin=0.05, session_frames=10)
    verdicts = _feed(tr, [0.95, 0.95, 0.95, 0.95])
    assert len(verdicts) == 1
    v = verdicts[0]
    assert (v.verdict, v.frames_used, v.reason) == ("counterfeit", 3, "confident")
    assert tr.done  # further frames of the same item are ignored
    assert tr.add(0.0, 1.0, 9) is None and tr.frames == 3


def test_no_early_stop_inside_margin_then_frame_limit():
    tr = _tracker(min_frames=2, margin=0.1, session_frames=4)
    verdicts = _feed(tr, [0.72, 0.74, 0.73, 0.75])  # counterfeit, but within the margin
    assert [(v.verdict, v.reason, v.frames_used) for v in verdicts] == [("counterfeit", "frame limit", 4)]


def test_uncertain_at_frame_limit():
    tr = _tracker(min_frames=3, session_frames=3)
    (v,) = _feed(tr, [0.2, 0.8, 0.5])
    assert v.verdict == "uncertain" and v.probability == pytest.approx(0.5)


def test_genuine_with_logodds():
    tr = _tracker(min_frames=2, aggregate="logodds")
    (v,) = _feed(tr, [0.01, 0.2])
    assert v.verdict == "genuine" and v.reason == "confident"


def test_evidence_is_the_most_counterfeit_frame():
    tr = _tracker(min_frames=3, session_frames=3)
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(3)]
    for i, p in enumerate([0.5, 0.9, 0.6]):
        tr.boundary(i * 0.1)
        v = tr.add(p, i * 0.1, i, evidence=frames[i])
    assert v.evidence is frames[1] and v.frame == 1


def test_trigger_from_another_thread_ends_the_session():
    tr = _tracker(min_frames=5, session_frames=10)
    _feed(tr, [0.9, 0.9])
    first = tr.session_id
    t = threading.Thread(target=tr.new_session)
    t.start()
    t.join()
    (v,) = tr.boundary(1.0)
    assert (v.session, v.reason, v.frames_used, v.verdict) == (first, "trigger", 2, "counterfeit")
    assert tr.session_id != first and tr.frames == 0 and tr.count == 2
    assert tr.boundary(1.1) == []  # a trigger is consumed once


def test_trigger_on_empty_session_gives_no_verdict():
    tr = _tracker()
    tr.boundary(0.0)
    tr.new_session()
    assert tr.boundary(0.1) == [] and tr.count == 2


def test_new_item_from_histogram_change():
    tr = _tracker(change_threshold=0.35, min_frames=5)
    cfg = QualityConfig()
    red = check_frame(make_image("red", seed=1), cfg).hist
    red2 = check_frame(make_image("red", seed=2), cfg).hist
    dark = check_frame((make_image("grey", seed=3) // 3).astype(np.uint8), cfg).hist
    _feed(tr, [0.1, 0.1], hist=red)
    assert tr.boundary(1.0, red2) == []  # same kind of item, new noise: same session
    tr.add(0.1, 1.0, 3, red2)
    (v,) = tr.boundary(1.1, dark)
    assert v.reason == "item changed" and v.frames_used == 3 and v.verdict == "genuine"


def test_gap_without_good_frames_starts_a_new_session():
    tr = _tracker(gap_s=1.0, min_frames=5)
    _feed(tr, [0.5, 0.5])
    assert tr.boundary(0.9) == []
    (v,) = tr.boundary(2.5)
    assert v.reason == "gap" and v.verdict == "uncertain"


def test_item_change_flag_and_flush():
    tr = _tracker(min_frames=5)
    tr.boundary(0.0, item="a.png")
    tr.add(0.9, 0.0, 0)
    (v,) = tr.boundary(0.1, item="b.png", item_changed=True)
    assert v.item == "a.png" and v.reason == "new item"
    tr.add(0.1, 0.1, 1)
    last = tr.flush()
    assert last.item == "b.png" and last.reason == "end of stream" and last.verdict == "genuine"
    assert tr.flush() is None


@pytest.mark.parametrize("kw", [dict(session_frames=0), dict(min_frames=5, session_frames=3),
                                dict(aggregate="median"), dict(margin=0.6)])
def test_bad_config(kw):
    with pytest.raises(ValueError):
        SessionConfig(**kw)
