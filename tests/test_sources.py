"""Sources: URI parsing, file sources (every frame, loop, bad files), the latest-frame slot, and the
watchdog/reconnect logic against simulated cameras that stall, disconnect or fail to open."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from edge_runtime.capture.cameras import Camera, SimulatedCamera, csi_pipeline, parse_source_uri
from edge_runtime.capture.sources import CaptureConfig, LiveSource, PullSource, open_source
from edge_runtime.errors import ImageError, SourceError
from fake_bundle import make_image

FAST = CaptureConfig(frame_timeout=0.2, open_timeout=1.0, backoff_initial=0.02, backoff_max=0.1)


@pytest.mark.parametrize("uri, scheme, target, options", [
    ("picam://0", "picam", "0", {}),
    ("picam://1?lens=12.5&size=2028x1520", "picam", "1", {"lens": "12.5", "size": "2028x1520"}),
    ("csi://0?size=1280x720&fps=60", "csi", "0", {"size": "1280x720", "fps": "60"}),
    ("v4l2:///dev/video2", "v4l2", "/dev/video2", {}),
    ("file:///data/x.png", "file", "/data/x.png", {}),
    ("file://rel/dir?loop=1&rate=5", "file", "rel/dir", {"loop": "1", "rate": "5"}),
    ("rtsp://10.0.0.2:8554/cam?x=1", "rtsp", "rtsp://10.0.0.2:8554/cam?x=1", {}),
    ("/plain/path.jpg", "file", "/plain/path.jpg", {}),
])
def test_parse_good_uris(uri, scheme, target, options):
    spec = parse_source_uri(uri)
    assert (spec.scheme, spec.target, spec.options) == (scheme, target, options)


@pytest.mark.parametrize("uri, match", [
    ("", "empty"),
    ("http://x/y", "unknown source scheme"),
    ("picam://zero", "camera number"),
    ("csi://0/extra", "camera number"),
    ("v4l2://video0", "/dev/videoN"),
    ("file://", "expected file://PATH"),
    ("rtsp://", "needs a host"),
    ("csi://0?size=big", "WxH"),
    ("file:///x?rate=fast", "must be a number"),
    ("file:///x?loop=maybe", "0/1"),
    ("picam://0?zoom=2", "unknown option"),
])
def test_parse_bad_uris(uri, match):
    with pytest.raises(SourceError, match=match):
        parse_source_uri(uri)


def test_csi_pipeline_ends_in_dropping_appsink():
    pipe = csi_pipeline(1, 1920, 1080, 30)
    assert pipe.startswith("nvarguscamerasrc sensor-id=1 ") and "framerate=30/1" in pipe
    assert pipe.endswith("appsink drop=true max-buffers=1")


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    cv2.imwrite(str(d / "a.png"), make_image("red", seed=1))
    cv2.imwrite(str(d / "sub" / "b.jpg"), make_image("blue", seed=2))
    (d / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (d / "notes.txt").write_text("ignored")
    return d


def _drain(src, limit=50):
    frames, errors = [], []
    while len(frames) + len(errors) < limit:
        try:
            f = src.read(0.5)
        except ImageError as exc:
            errors.append(str(exc))
            continue
        if f is None:
            break
        frames.append(f)
    return frames, errors


def test_folder_source_gives_every_frame_and_reports_bad_files(folder):
    src = open_source(f"file://{folder}")
    assert isinstance(src, PullSource)
    with src:
        frames, errors = _drain(src)
        assert src.ended
    assert [f.item.split("imgs/")[1] for f in frames] == ["a.png", "sub/b.jpg"]
    assert len(errors) == 1 and "c.png" in errors[0]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (120, 160, 3) for f in frames)
    assert [f.index for f in frames] == [0, 2]


def test_glob_single_image_and_loop(folder):
    with open_source(f"file://{folder}/*.png") as src:
        frames, errors = _drain(src)
    assert len(frames) == 1 and len(errors) == 1
    with open_source(f"file://{folder}/a.png", loop=True) as src:
        frames, _ = _drain(src, limit=5)
    assert len(frames) == 5 and not src.ended


@pytest.mark.parametrize("uri, match", [
    ("file:///no/such/dir", "no such file"),
    ("file:///tmp/*.nothing-matches", "glob matches no image"),
])
def test_missing_files(uri, match):
    with pytest.raises(SourceError, match=match):
        open_source(uri)


def test_not_an_image_suffix(folder):
    with pytest.raises(SourceError, match="not an image"):
        open_source(f"file://{folder}/notes.txt")


def test_video_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(4):
        writer.write(make_image("grey", seed=i))
    writer.release()
    with open_source(f"file://{path}") as src:
        frames, _ = _drain(src)
    assert len(frames) == 4 and frames[0].item is None
    with open_source(f"file://{path}?loop=1") as src:
        frames, _ = _drain(src, limit=9)
    assert len(frames) == 9


def test_rate_paces_and_latest_frame_slot_drops_old_frames(folder):
    src = open_source(f"file://{folder}/a.png", loop=True, rate=200.0, capture=FAST)
    assert isinstance(src, LiveSource)
    with src:
        first = src.read(1.0)
        time.sleep(0.3)  # a slow pipeline: ~60 frames arrive, only the newest is kept
        newest = src.read(1.0)
        assert newest.index > first.index + 3
        assert src.stats.dropped >= 3
    assert src.stats.captured >= src.stats.delivered + src.stats.dropped - 1


def test_rate_only_for_files():
    with pytest.raises(SourceError, match="file:// sources only"):
        open_source("sim://", rate=5)


def test_paced_file_source_ends(folder):
    with open_source(f"file://{folder}/a.png", rate=100.0, capture=FAST) as src:
        assert src.read(1.0) is not None
        assert src.read(1.0) is None and src.ended


def _frames_after(src, n, deadline=5.0):
    got, t_end = [], time.monotonic() + deadline
    while len(got) < n and time.monotonic() < t_end and not src.ended:
        f = src.read(0.1)
        if f is not None:
            got.append(f)
    return got


def test_stalled_camera_is_abandoned_and_reconnected():
    state = {}
    src = LiveSource(lambda: SimulatedCamera(fps=100, stall_after=3, state=state), "sim://stall", FAST)
    with src:
        frames = _frames_after(src, 6)
        errors = src.errors()
    assert len(frames) == 6, "frames keep coming after the stall"
    assert src.stats.stalls >= 1 and state["opens"] >= 2
    assert any("stalled" in e for e in errors)


def test_disconnecting_camera_reconnects_with_backoff():
    state = {}
    cfg = CaptureConfig(frame_timeout=2.0, open_timeout=1.0, backoff_initial=0.01, backoff_max=0.05)
    src = LiveSource(lambda: SimulatedCamera(fps=200, disconnect_after=2, state=state), "sim://dc", cfg)
    with src:
        frames = _frames_after(src, 5)
        errors = src.errors()
    assert len(frames) == 5
    assert src.stats.reconnects >= 2 and src.stats.stalls == 0
    assert any("simulated disconnect" in e for e in errors)


def test_reconnect_retries_failed_opens():
    # first open succeeds (start), then the camera drops and the next two reopen attempts fail
    state = {"opens": 0}

    class Flaky(SimulatedCamera):
        def open(self):
            self.state["opens"] += 1
            if self.state["opens"] in (2, 3):
                raise SourceError("usb bus reset")
            self._closed.clear()
            self._n = 0

    src = LiveSource(lambda: Flaky(fps=200, disconnect_after=2, state=state), "sim://flaky", FAST)
    with src:
        frames = _frames_after(src, 4)
        errors = src.errors()
    assert len(frames) == 4 and state["opens"] >= 4
    assert sum("reconnect failed" in e for e in errors) >= 2


def test_camera_that_does_not_open_is_one_error():
    src = open_source("sim://?fail_opens=1", capture=FAST)
    with pytest.raises(SourceError, match="simulated open failure"):
        src.start()
    src.close()


def test_open_that_hangs_times_out():
    class Hangs(Camera):
        def __init__(self):
            self.release = threading.Event()

        def open(self):
            self.release.wait(5)

        def close(self):
            self.release.set()

    src = LiveSource(Hangs, "sim://hang", CaptureConfig(open_timeout=0.2))
    with pytest.raises(SourceError, match="did not open within"):
        src.start()


def test_v4l2_missing_device():
    src = open_source("v4l2:///dev/video-does-not-exist", capture=FAST)
    with pytest.raises(SourceError, match="cannot open"):
        src.start()
    src.close()


def test_sim_uri_and_finite_stream():
    # an unpaced camera outruns the reader: the slot keeps the newest frame, the others count as dropped
    with open_source("sim://?frames=3&colour=blue&size=64x48", capture=FAST) as src:
        frames = _frames_after(src, 3, deadline=2.0)
        last = src.read(0.5)
        assert src.read(0.1) is None and src.ended
    frames += [last] if last is not None else []
    assert frames[-1].index == 2 and frames[0].image.shape == (48, 64, 3)
    assert src.stats.delivered + src.stats.dropped == 3 == src.stats.captured
    with pytest.raises(SourceError, match="colour"):
        open_source("sim://?colour=green")
