"""The per-frame model, the scanner loop (errors become events, the loop goes on), events, the JSON
Lines sink and the `mgfen-scan` CLI, all on the fake bundle (no torch, no trained model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edge_runtime import events
from edge_runtime.bundle.manifest import load_bundle
from edge_runtime.capture.sources import Frame
from edge_runtime.cli.scan_cli import main
from edge_runtime.errors import ImageError
from edge_runtime.model_runner import STAGES, ModelRunner
from edge_runtime.scanner import ScanConfig, ScanError, Scanner
from edge_runtime.session import SessionConfig, SessionTracker
from edge_runtime.sinks.sinks_jsonl import JsonlSink
from fake_bundle import make_fake_bundle, make_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_fake_bundle(tmp_path_factory.mktemp("scan") / "bundle", int8=True)


@pytest.fixture(scope="module")
def runner(bundle_dir):
    with ModelRunner.open(load_bundle(bundle_dir), "ort") as r:
        yield r


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    for label, colour in (("genuine", "red"), ("counterfeit", "blue")):
        (d / label).mkdir()
        for i in range(3):
            cv2.imwrite(str(d / label / f"{i}.png"), make_image(colour, seed=i, strength=40 + 20 * i))
    cv2.imwrite(str(d / "genuine" / "blurry.png"), make_image("red", blur=3))
    (d / "counterfeit" / "broken.png").write_bytes(b"not a png")
    return d


# ------------------------------------------------------------------------------------------ runner


def test_runner_decides_by_colour(runner):
    red, blue, grey = (runner.run_frame(make_image(c)) for c in ("red", "blue", "grey"))
    assert red.decision == "genuine" and red.probability < 0.01
    assert blue.decision == "counterfeit" and blue.probability > 0.99
    assert grey.decision == "uncertain" and abs(grey.probability - 0.5) < 0.05
    assert set(red.timings_ms) == set(STAGES) and all(v >= 0 for v in red.timings_ms.values())
    assert red.boxes.shape == (4, 4) and red.box_scores.shape == (4,) and red.heatmap.shape == (8, 8)
    assert red.frame_shape == (120, 160) and red.probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_runner_accepts_grey_and_rejects_bad_frames(runner):
    grey16 = (make_image("grey")[:, :, 0].astype(np.uint16) * 257)
    assert runner.run_frame(grey16).decision == "uncertain"
    for bad, match in [(np.zeros((10, 10, 3), np.uint8), "too small"),
                       (np.zeros((64, 64, 2), np.uint8), "unsupported image shape"),
                       (np.zeros((64, 64, 3), np.int32), "unsupported pixel type"),
                       ("frame.png", "expected a numpy array")]:
        with pytest.raises(ImageError, match=match):
            runner.run_frame(bad)


def test_runner_without_parts(tmp_path):
    b = load_bundle(make_fake_bundle(tmp_path / "np", use_parts=False))
    with ModelRunner.open(b, "ort") as r:
        assert r.parts_backend is None
        res = r.run_frame(make_image("blue"))
    assert res.decision == "counterfeit" and res.timings_ms["parts"] == 0.0


# ------------------------------------------------------------------------------------------- loop


class ListSource:
    """Frames (or exceptions to raise) from a list; ends after the list."""

    def __init__(self, items, items_names=None):
        self.items, self.i, self.ended, self.stats = list(items), 0, False, None

    def read(self, timeout=None):
        if self.i >= len(self.items):
            self.ended = True
            return None
        item, self.i = self.items[self.i], self.i + 1
        if isinstance(item, BaseException):
            raise item
        return Frame(item, self.i - 1, time.time(), None)

    def errors(self):
        return []


class Collect:
    def __init__(self):
        self.events, self.closed, self.previews = [], False, 0

    def emit(self, event):
        json.loads(events.to_json(event))  # every event is valid JSON
        events.validate_event(event)
        self.events.append(event)

    def preview(self, frame, heatmap, event):
        assert frame.ndim == 3 and heatmap.ndim == 2 and event["type"] == "frame"
        self.previews += 1

    def close(self):
        self.closed = True

    def of(self, kind):
        return [e for e in self.events if e["type"] == kind]


class Broken:
    def emit(self, event):
        raise OSError("disk full")

    def close(self):
        raise OSError("still full")


def _scanner(runner, frames, sinks, **session):
    session.setdefault("change_threshold", None)
    session.setdefault("gap_s", None)
    tracker = SessionTracker(SessionConfig(**session), runner.thresholds)
    return Scanner(runner, ListSource(frames), sinks, tracker, ScanConfig())


def test_loop_turns_problems_into_events_and_goes_on(runner):
    sink = Collect()
    frames = [make_image("blue", seed=i) for i in range(3)]
    frames.insert(1, np.zeros((8, 8, 3), np.uint8))  # wrong size
    frames.insert(2, ImageError("cam.png: truncated image file"))  # a source read error
    frames.insert(3, make_image("blue", blur=4))  # out of focus
    sc = _scanner(runner, frames, [sink, Broken()], min_frames=3)
    stats = sc.run()
    sc.close()
    assert stats.classified == 3 and stats.retakes == 1 and stats.errors == 3 and stats.verdicts == 1
    # Broken fails on every event, but only its first failure becomes an error event (for the other sinks)
    assert stats.sink_errors == len(sink.events) - 1 and sink.closed
    (err_sink,) = [e for e in sink.of("error") if e["where"] == "sink"]
    assert err_sink["message"] == "sink Broken failed: OSError: disk full"
    (err_size, err_read) = [e for e in sink.of("error") if e["where"] != "sink"]
    assert err_size["where"] == "source" and "too small" in err_size["message"]
    assert err_read["where"] == "source" and "truncated" in err_read["message"]
    (v,) = sink.of("verdict")
    assert v["verdict"] == "counterfeit" and v["frames_used"] == 3 and v["reason"] == "confident"
    assert sink.of("retake")[0]["reason"].startswith("out of focus")
    frame = sink.of("frame")[0]
    assert set(frame["timings_ms"]) == set(events.TIMING_KEYS) and frame["model"] == runner.model_id
    assert frame["boxes"][0] == [20.0, 0.0, 50.0, 30.0]  # square crop offset of a 160x120 frame
    assert sink.previews == 3


class FailsOnce:
    """A sink whose first emit raises; later ones work."""

    def __init__(self):
        self.events = []
        self.calls = 0

    def emit(self, event):
        self.calls += 1
        if self.calls == 1:
            raise ValueError("bad value in sink")
        self.events.append(event)

    def close(self):
        pass


def test_any_source_or_sink_exception_becomes_an_error_event_and_the_loop_goes_on(runner):
    sink, flaky = Collect(), FailsOnce()
    frames = [make_image("blue", seed=i) for i in range(3)]
    frames.insert(1, RuntimeError("camera driver hiccup\nsecond line"))  # not an MgfenError
    sc = _scanner(runner, frames, [sink, flaky], min_frames=3)
    stats = sc.run()
    assert stats.frames == 3 and stats.classified == 3 and stats.verdicts == 1
    assert stats.errors == 2 and stats.errors_by_where == {"sink": 1, "source": 1} and stats.sink_errors == 1
    kinds = [(e["type"], e.get("where")) for e in sink.events]
    assert kinds == [("frame", None), ("error", "sink"), ("error", "source"), ("frame", None), ("frame", None),
                     ("verdict", None)]
    assert sink.events[1]["message"] == "sink FailsOnce failed: ValueError: bad value in sink"
    assert sink.events[2]["message"] == "RuntimeError: camera driver hiccup" and sink.events[2]["frame"] == 1
    assert flaky.events == sink.events[2:]  # it recovered: everything after its failure reached it


def test_a_sink_whose_preview_always_fails_is_reported_once(runner):
    class BadPreview(Collect):
        def preview(self, frame, heatmap, event):
            raise cv2.error("encoder exploded")

    sink, bad = Collect(), BadPreview()
    stats = _scanner(runner, [make_image("blue", seed=i) for i in range(4)], [sink, bad]).run()
    assert stats.classified == 4 and stats.sink_errors == 4 and sink.previews == 4
    (err,) = sink.of("error")
    assert err["where"] == "sink" and err["message"] == "preview of sink BadPreview failed: error: encoder exploded"
    assert not bad.of("error") and len(bad.of("frame")) == 4  # its emit() works, its own failure is not sent to it


def test_a_bug_in_the_model_runner_is_an_error_event_with_its_type(runner):
    class Buggy:
        def run_frame(self, image):
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    sink = Collect()
    sc = _scanner(runner, [make_image("blue", seed=i) for i in range(3)], [sink])
    sc.runner = Buggy()
    stats = sc.run()
    assert stats.classified == 0 and stats.errors == 3
    assert [(e["where"], e["message"]) for e in sink.of("error")] == \
        [("scanner", "TypeError: unsupported operand type(s) for +: 'int' and 'str'")] * 3


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_interrupt_from_the_source_ends_the_scan_with_a_verdict(runner, stop):
    sink = Collect()
    frames = [make_image("grey")] * 2 + [stop()] + [make_image("grey")] * 5
    sc = _scanner(runner, frames, [sink], min_frames=100, session_frames=1000)
    with pytest.raises(stop):
        sc.run()
    assert sc.stats.classified == 2 and not sink.of("error")
    (v,) = sink.of("verdict")
    assert v["frames_used"] == 2


def test_a_source_that_always_raises_stops_after_the_consecutive_error_limit(runner):
    class Dead(ListSource):
        def read(self, timeout=None):
            raise OSError(5, "Input/output error")

    tracker = SessionTracker(SessionConfig(change_threshold=None, gap_s=None), runner.thresholds)
    sink = Collect()
    sc = Scanner(runner, Dead([]), [sink], tracker, ScanConfig(max_consecutive_errors=5))
    with pytest.raises(ScanError, match=r"5 errors in a row, last: OSError: \[Errno 5\] Input/output error"):
        sc.run()
    assert len(sink.of("error")) == 5 and sc.stats.frames == 0


def test_consecutive_errors_stop_the_scan(runner):
    sc = _scanner(runner, [np.zeros((4, 4), np.uint8)] * 60, [Collect()])
    with pytest.raises(ScanError, match="50 errors in a row"):
        sc.run()


def test_stop_from_another_thread_flushes_the_session(runner):
    sink = Collect()
    sc = _scanner(runner, [make_image("grey")] * 200, [sink], min_frames=100, session_frames=1000)
    original = sc.tracker.add

    def add(*a, **kw):  # another thread presses "stop" after the 20th frame (deterministic: joined here)
        out = original(*a, **kw)
        if sc.tracker.frames == 20:
            t = threading.Thread(target=sc.stop)
            t.start()
            t.join()
        return out

    sc.tracker.add = add
    stats = sc.run()
    assert stats.frames == 20
    (v,) = sink.of("verdict")
    assert v["reason"] == "stopped" and v["verdict"] == "uncertain" and v["frames_used"] == stats.classified


def test_new_session_trigger_during_scan(runner):
    sink = Collect()
    sc = _scanner(runner, [make_image("red", seed=i) for i in range(6)], [sink], min_frames=10,
                  session_frames=10)
    original = sc.tracker.add

    def add(*a, **kw):  # press "new scan" after the third good frame
        out = original(*a, **kw)
        if sc.tracker.frames == 3:
            sc.new_session()
        return out

    sc.tracker.add = add
    sc.run()
    reasons = [(v["reason"], v["frames_used"]) for v in sink.of("verdict")]
    assert reasons == [("trigger", 3), ("end of stream", 3)]
    assert len({e["session"] for e in sink.of("frame")}) == 2 and sc.health()["verdicts"] == 2


def test_jsonl_sink_writes_flushed_lines(tmp_path):
    path = tmp_path / "sub" / "events.jsonl"
    sink = JsonlSink(path)
    e = events.error_event("s", 1, "m", "boom", "model")
    sink.emit(e)
    assert json.loads(path.read_text()) == e  # readable before close: flushed per line
    sink.emit({**e, "message": float("nan")})
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["message"] is None


def test_event_schema_rejects_bad_values():
    with pytest.raises(ValueError):
        events.verdict_event("s", 0, "m", "fake", 0.5, 1, "x")
    with pytest.raises(ValueError):
        events.error_event("s", 0, "m", "x", "nowhere")
    with pytest.raises(ValueError, match="missing"):
        events.validate_event({"type": "retake", "session": "s"})


# -------------------------------------------------------------------------------------------- CLI


def test_cli_folder_with_labels(bundle_dir, dataset, tmp_path):
    out, summary, db = tmp_path / "e.jsonl", tmp_path / "s.json", tmp_path / "audit.db"
    res = CliRunner().invoke(main, ["run", "--bundle", str(bundle_dir), "--source", f"file://{dataset}",
                                    "--labels", str(dataset), "--out", str(out), "--summary-json", str(summary),
                                    "--audit", str(db)])
    assert res.exit_code == 0, res.output
    assert "accuracy 1.0000 over 6 labelled items" in res.output and "confusion" in res.output
    evs = [json.loads(line) for line in out.read_text().splitlines()]
    for e in evs:
        events.validate_event(e)
    kinds = [e["type"] for e in evs]
    assert kinds.count("frame") == 6 and kinds.count("verdict") == 6 and kinds.count("retake") == 1
    assert kinds.count("error") == 1
    s = json.loads(summary.read_text())
    assert s["confusion"]["counterfeit"]["counterfeit"] == 3 and s["confusion"]["genuine"]["genuine"] == 3
    assert s["latency_ms"]["global"]["p50"] is not None and s["backends"][0].startswith("ort:")
    assert len(list((tmp_path / "audit_evidence").glob("*.jpg"))) == 3  # the counterfeit verdicts


@pytest.mark.parametrize("args, match", [
    (["--source", "file:///nonexistent-dir"], "no such file or folder"),
    (["--source", "bogus://0"], "unknown source scheme"),
    (["--source", "sim://", "--precision", "fp16"], "fp16 needs TensorRT"),
])
def test_cli_bad_input_is_one_line(bundle_dir, args, match):
    res = CliRunner().invoke(main, ["run", "--bundle", str(bundle_dir), *args])
    assert res.exit_code != 0 and match in res.output
    assert isinstance(res.exception, SystemExit) and len(res.output.strip().splitlines()) == 1


def test_cli_missing_bundle_file(tmp_path):
    b = make_fake_bundle(tmp_path / "b")
    (b / "parts.onnx").unlink()
    res = CliRunner().invoke(main, ["run", "--bundle", str(b), "--source", "sim://"])
    assert res.exit_code == 1 and "parts.onnx listed in the manifest is missing" in res.output


def test_cli_sigterm_flushes_and_exits_zero(bundle_dir, tmp_path):
    out = tmp_path / "e.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli.scan_cli", "run", "--bundle", str(bundle_dir),
                             "--source", "sim://?fps=50&colour=grey", "--out", str(out), "--min-frames", "1000",
                             "--session-frames", "1000"], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    summary, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    evs = [json.loads(line) for line in out.read_text().splitlines()]
    assert evs[-1]["type"] == "verdict" and evs[-1]["reason"] == "stopped"
    assert summary.startswith("frames ")  # with --out, the summary goes to stdout
