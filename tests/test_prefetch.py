"""PrefetchSource: one frame ahead, same frames, same errors in the same order, same scan results."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.capture.prefetch import PrefetchSource, prefetch_threads
from edge_runtime.errors import ImageError
from edge_runtime.model_runner import ModelRunner
from edge_runtime.quality import QualityConfig
from edge_runtime.scanner import ScanConfig, Scanner
from edge_runtime.session import SessionConfig, SessionTracker
from fake_bundle import make_fake_bundle, make_image
from test_scanner import Collect, ListSource


class Started(ListSource):
    def start(self):
        self.started = True

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    with ModelRunner.open(load_bundle(make_fake_bundle(tmp_path_factory.mktemp("pf") / "b")), "ort") as r:
        yield r


def test_frames_errors_and_end_arrive_in_order_prepared_once():
    calls = []

    def prepare(image):
        calls.append(threading.current_thread().name)
        return ("prepared", int(image.sum()))

    frames = [make_image("blue", seed=0), make_image("red", blur=4), make_image("red", seed=2)]  # [1]: out of focus
    items = [frames[0], ImageError("b.png: truncated image file"), frames[1], frames[2]]
    src = PrefetchSource(Started(items), prepare, QualityConfig())
    src.start()
    first = src.read(timeout=5)
    assert first.index == 0 and first.prepared == ("prepared", int(frames[0].sum())) and first.quality.ok
    with pytest.raises(ImageError, match="truncated"):
        src.read(timeout=5)
    blurry = src.read(timeout=5)
    assert blurry.quality.ok is False and blurry.prepared is None and blurry.gate_ms >= 0
    last = src.read(timeout=5)
    assert last.prepared == ("prepared", int(frames[2].sum()))
    assert src.read(timeout=5) is None and src.ended and src.read(timeout=5) is None
    src.close()
    assert src.source.closed and len(calls) == 2 and all(name.startswith("prefetch") for name in calls)


def test_a_failing_preparation_is_left_to_the_caller():
    def prepare(image):
        raise ImageError("frame 1x1 is too small")

    src = PrefetchSource(Started([np.zeros((64, 64, 3), np.uint8)]), prepare, QualityConfig(enabled=False))
    src.start()
    frame = src.read(timeout=5)
    assert frame.prepared is None  # the scanner's own run_frame meets the error and reports it
    src.close()


def test_scan_with_prefetch_gives_the_same_events(runner):
    frames = [make_image("blue", seed=i) for i in range(3)] + [make_image("red", seed=i) for i in range(3)]
    frames.insert(1, np.zeros((8, 8, 3), np.uint8))             # wrong size: an error event
    frames.insert(2, ImageError("cam.png: truncated image file"))  # a read error
    frames.insert(3, make_image("blue", blur=4))               # out of focus: a retake

    def scan(prefetch: bool) -> list[dict]:
        sink = Collect()
        tracker = SessionTracker(SessionConfig(min_frames=3, change_threshold=None, gap_s=None), runner.thresholds)
        source = Started(frames)
        if prefetch:
            source = PrefetchSource(source, runner.prepare, ScanConfig().gate)
        source.start()
        Scanner(runner, source, [sink], tracker, ScanConfig()).run()
        source.close()
        keep = ("type", "frame", "probability", "decision", "verdict", "reason", "message", "where", "boxes")
        return [{k: e[k] for k in keep if k in e} for e in sink.events]

    plain, ahead = scan(False), scan(True)
    assert plain == ahead
    assert [e["type"] for e in plain].count("frame") == 6 and any(e["type"] == "retake" for e in plain)


def test_prefetch_threads_leaves_a_core():
    assert prefetch_threads(False) is None and prefetch_threads(True) >= 1
