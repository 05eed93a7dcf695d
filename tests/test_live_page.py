"""The live page in a real headless browser (Debian's chromium driven by Playwright): it connects to the
event stream, shows the verdict the sink emits, refreshes the preview and starts a new scan.

Skipped only when no chromium binary exists (CI installs the Debian package `chromium`)."""

from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pytest

from edge_runtime.sinks.http_sink import HttpSink, new_token
from edge_runtime.sinks.preview import preview_jpeg

CHROMIUM = next((p for p in (os.environ.get("MGFEN_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium")
                 if p and os.path.exists(p)), None)
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)"),
    pytest.mark.timeout(60),
]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]
WAIT_MS = 15000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright  # imported here: absent browser => skip, not error

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30000)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.js_errors = []
    pg.on("pageerror", lambda exc: pg.js_errors.append(str(exc)))
    pg.on("console", lambda msg: pg.js_errors.append(msg.text)
          if msg.type == "error" and "Content Security Policy" in msg.text else None)
    yield pg
    context.close()


def ev(kind: str, **extra) -> dict:
    base = {"type": kind, "session": "s-1", "frame": 7, "ts": 1700000000.0, "model": "m0"}
    base.update(extra)
    return base


def wait_preview_width(page, width: int) -> None:
    # polled from Python: wait_for_function would eval a string, which the page's CSP forbids
    deadline = time.monotonic() + WAIT_MS / 1000
    while page.eval_on_selector("#preview", "img => img.naturalWidth") != width:
        assert time.monotonic() < deadline, f"preview never reached width {width}"
        time.sleep(0.05)


def open_live(page, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#conn")).to_have_text("live")  # the EventSource is open


def test_page_shows_frames_and_the_verdict(page):
    from playwright.sync_api import expect

    with HttpSink(port=0) as sink:
        open_live(page, sink.url)
        expect(page.locator("#verdict")).to_have_text("WAITING")
        sink.emit(ev("frame", probability=0.61, decision="uncertain", boxes=[[1, 2, 3, 4]], box_scores=[0.5],
                     timings_ms={"total": 12.25}))
        expect(page.locator("#verdict")).to_have_text("SCANNING")
        expect(page.locator("#frame")).to_have_text("7")
        expect(page.locator("#ms")).to_have_text("12.3")
        expect(page.locator("#session")).to_have_text("s-1")

        sink.emit(ev("verdict", verdict="counterfeit", probability=0.93, frames_used=5))
        expect(page.locator("#verdict")).to_have_text("COUNTERFEIT")
        expect(page.locator("#banner")).to_have_class("counterfeit")
        expect(page.locator("#banner")).to_have_css("background-color", "rgb(210, 44, 44)")
        expect(page.locator("#detail")).to_contain_text("p(counterfeit) = 0.930, 5 frames")
        expect(page.locator("#nverdicts")).to_have_text("1")
        expect(page.locator("#log li.verdict")).to_contain_text("verdict counterfeit p=0.930")

        sink.emit(ev("retake", session="s-2", frame=1, reason="too blurry"))
        sink.emit(ev("error", session="s-2", frame=2, message="camera timeout", where="capture"))
        expect(page.locator("#log li.retake")).to_contain_text("retake: too blurry")
        expect(page.locator("#log li.error")).to_contain_text("error in capture: camera timeout")
        sink.emit(ev("verdict", session="s-2", frame=9, verdict="genuine", probability=0.02, frames_used=3))
        expect(page.locator("#verdict")).to_have_text("GENUINE")
        expect(page.locator("#banner")).to_have_css("background-color", "rgb(46, 158, 58)")
        assert sink.health()["clients"] == 1
    assert page.js_errors == []


def test_page_loads_the_last_verdict_and_the_preview(page):
    from playwright.sync_api import expect

    with HttpSink(port=0) as sink:
        frame = np.full((240, 320, 3), 90, np.uint8)
        sink.update_preview(preview_jpeg(frame, np.array([[40, 40, 120, 120]]), [0.9], None, "uncertain", 0.5))
        sink.emit(ev("frame", probability=0.5, decision="uncertain"))
        sink.emit(ev("verdict", verdict="uncertain", probability=0.5, frames_used=12))
        open_live(page, sink.url)  # the verdict came before the page: /api/latest supplies it
        expect(page.locator("#verdict")).to_have_text("UNCERTAIN")
        expect(page.locator("#preview")).to_have_class("shown")
        wait_preview_width(page, 320)

        sink.update_preview(preview_jpeg(np.zeros((100, 200, 3), np.uint8), [], [], None, "genuine", 0.1))
        sink.emit(ev("frame", frame=8, probability=0.1, decision="genuine"))
        wait_preview_width(page, 200)
    assert page.js_errors == []


def test_new_scan_button_calls_the_scanner(page):
    from playwright.sync_api import expect

    called = threading.Event()

    def new_session() -> str:
        called.set()
        return "s-42"

    with HttpSink(port=0, on_new_session=new_session) as sink:
        open_live(page, sink.url)
        sink.emit(ev("verdict", verdict="counterfeit", probability=0.9, frames_used=2))
        expect(page.locator("#verdict")).to_have_text("COUNTERFEIT")
        page.click("#newscan")
        expect(page.locator("#log")).to_contain_text("new scan: s-42")
        expect(page.locator("#verdict")).to_have_text("SCANNING")
        assert called.is_set()
    assert page.js_errors == []


def test_page_with_token(page):
    from playwright.sync_api import expect

    token = new_token()
    called = threading.Event()
    with HttpSink(port=0, token=token, on_new_session=called.set) as sink:
        response = page.goto(sink.url)
        assert response is not None and response.status == 401
        open_live(page, f"{sink.url}?token={token}")
        sink.update_preview(preview_jpeg(np.zeros((50, 60, 3), np.uint8), [], [], None, "genuine", 0.1))
        sink.emit(ev("frame", probability=0.1, decision="genuine"))
        sink.emit(ev("verdict", verdict="genuine", probability=0.05, frames_used=3))
        expect(page.locator("#verdict")).to_have_text("GENUINE")
        wait_preview_width(page, 60)
        page.click("#newscan")  # the page sends the token as a Bearer header
        expect(page.locator("#log")).to_contain_text("new scan")
        assert called.is_set()
    assert page.js_errors == []
