"""MQTT sink against a real mosquitto broker started on a free loopback port (Debian package `mosquitto`)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_runtime.errors import BackendError, MgfenError
from edge_runtime.sinks.mqtt_sink import MqttSink, MqttSinkError, parse_mqtt_uri

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
pytestmark = pytest.mark.timeout(60)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto listening on 127.0.0.1:port only, no persistence; start()/stop() may be repeated."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.port = port
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.conf.chmod(0o644)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None


class Subscriber:
    """A paho client that records (topic, payload, qos, retain) of everything under TOPIC/#."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, int, bool]] = []
        self.cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{topic}/#", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert subscribed.wait(10), "test subscriber could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(self, topic: str, count: int = 1, timeout: float = 15.0) -> list[tuple[str, bytes, int, bool]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [m for m in self.messages if m[0] == topic]
                if len(got) >= count or time.monotonic() > deadline:
                    return got
                self.cond.wait(0.1)

    def wait_until(self, topic: str, pred, timeout: float = 15.0) -> list[tuple[str, bytes, int, bool]]:
        """Messages on topic matching pred, waiting until there is at least one (or timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = [m for m in self.messages if m[0] == topic and pred(m)]
                if got or time.monotonic() > deadline:
                    return got
                self.cond.wait(0.1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path, free_port())
    b.start()
    yield b
    b.stop()


def event(kind: str, **extra) -> dict:
    base = {"type": kind, "session": "s-1", "frame": 3, "ts": 1700000000.5, "model": "abc123"}
    base.update(extra)
    return base


VERDICT = event("verdict", verdict="counterfeit", probability=0.93, frames_used=4)
FRAME = event("frame", probability=0.9, decision="counterfeit", boxes=[[1, 2, 30, 40]], box_scores=[0.7],
              timings_ms={"total": 12.5})


def wait_connected(sink: MqttSink, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not sink.stats()["connected"]:
        assert time.monotonic() < deadline, f"sink never connected: {sink.stats()}"
        time.sleep(0.05)


@needs_broker
@pytest.mark.timeout(60)
def test_verdict_published_qos1_and_frames_not_by_default(broker):
    sub = Subscriber(broker.port, "shop/scanner1")
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/shop/scanner1")
    try:
        wait_connected(sink)
        sink.emit(FRAME)
        sink.emit(VERDICT)
        sink.emit(event("retake", reason="blurry"))
        got = sub.wait_for("shop/scanner1/verdict")
        assert len(got) == 1
        topic, payload, qos, retain = got[0]
        assert json.loads(payload) == VERDICT
        assert qos == 1 and not retain
        assert [m for m in sub.wait_for("shop/scanner1/status") if m[1] == b"online"]
        sink.close()
        stats = sink.stats()
        assert stats["published"] == 1 and stats["acked"] == 1 and stats["dropped"] == 0
        assert not [m for m in sub.messages if m[0].endswith(("/frame", "/retake"))]
        # close() said goodbye on the status topic
        assert sub.wait_for("shop/scanner1/status", count=2)[-1][1] == b"offline"
    finally:
        sink.close()
        sub.close()


@needs_broker
@pytest.mark.timeout(60)
def test_other_event_types_when_asked(broker):
    sub = Subscriber(broker.port, "t")
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/t", types=("frame", "verdict", "error"))
    try:
        wait_connected(sink)
        for i in range(20):
            sink.emit({**FRAME, "frame": i})
        sink.emit(event("error", message="camera timeout", where="capture"))
        sink.emit(VERDICT)
        frames = sub.wait_for("t/frame", count=20)
        assert [json.loads(m[1])["frame"] for m in frames] == list(range(20))  # in order, none lost
        assert json.loads(sub.wait_for("t/error")[0][1])["where"] == "capture"
        assert json.loads(sub.wait_for("t/verdict")[0][1])["verdict"] == "counterfeit"
    finally:
        sink.close()
        sub.close()


@needs_broker
@pytest.mark.timeout(60)
def test_starts_before_broker_and_survives_broker_restart(tmp_path):
    broker = Broker(tmp_path, free_port())
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}/fleet", retain_verdict=True, queue_size=3,
                    reconnect_min_s=0.2, reconnect_max_s=0.5)
    try:
        # no broker yet: emit must return at once, the queue stays bounded (oldest dropped)
        t0 = time.monotonic()
        for i in range(5):
            sink.emit({**VERDICT, "frame": i})
        assert time.monotonic() - t0 < 1.0
        stats = sink.stats()
        assert not stats["connected"] and stats["queued"] == 3 and stats["dropped"] == 2

        broker.start()
        wait_connected(sink)
        deadline = time.monotonic() + 15
        while (sink.stats()["queued"] or sink.stats()["acked"] < 3) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.stats()["acked"] == 3, str(sink.stats())
        sub = Subscriber(broker.port, "fleet")
        try:
            # retained: the last queued verdict reaches a subscriber that came after the publish
            got = sub.wait_until("fleet/verdict", lambda m: json.loads(m[1])["frame"] == 4)
            assert got, f"last queued verdict never arrived: {sub.messages}"
        finally:
            sub.close()

        broker.stop()
        deadline = time.monotonic() + 15
        while sink.stats()["connected"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not sink.stats()["connected"]
        sink.emit({**VERDICT, "frame": 99, "verdict": "genuine"})  # while the broker is down
        broker.start()
        sub = Subscriber(broker.port, "fleet")
        try:
            got = sub.wait_until("fleet/verdict", lambda m: json.loads(m[1])["frame"] == 99)
            assert got and json.loads(got[0][1]) == {**VERDICT, "frame": 99, "verdict": "genuine"}
            assert sink.stats()["connects"] >= 2
        finally:
            sub.close()
    finally:
        sink.close()
        broker.stop()


@pytest.mark.timeout(60)
def test_close_without_broker_returns():
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/x", reconnect_min_s=0.2, reconnect_max_s=0.5)
    sink.emit(VERDICT)
    t0 = time.monotonic()
    sink.close(timeout_s=1.0)
    assert time.monotonic() - t0 < 5.0
    assert sink.stats()["dropped"] == 1  # never connected: the queued verdict is reported lost
    sink.close()  # idempotent


def test_parse_uri():
    t = parse_mqtt_uri("mqtt://user:p%40ss@broker.local:1884/shop/scanner-1")
    assert (t.host, t.port, t.topic, t.tls, t.username, t.password) == (
        "broker.local", 1884, "shop/scanner-1", False, "user", "p@ss")
    t = parse_mqtt_uri("mqtts://10.0.0.2/a")
    assert (t.port, t.tls, t.username) == (8883, True, None)
    assert parse_mqtt_uri("mqtt://[::1]/a/").topic == "a"


@pytest.mark.parametrize("uri", [
    "", "http://h/t", "mqtt:///t", "mqtt://h", "mqtt://h/", "mqtt://h:99999/t", "mqtt://h:x/t",
    "mqtt://h/a/+/b", "mqtt://h/a/#", "mqtt://h/a//b", "mqtt://h/t?x=1",
])
def test_bad_uri_is_one_line_typed_error(uri):
    with pytest.raises(MqttSinkError) as info:
        MqttSink(uri)
    assert isinstance(info.value, MgfenError) and "\n" not in str(info.value)


def test_bad_options():
    with pytest.raises(MqttSinkError):
        MqttSink("mqtt://127.0.0.1/t", types=("verdict", "bogus"))
    with pytest.raises(MqttSinkError):
        MqttSink("mqtt://127.0.0.1/t", qos=3)


@pytest.mark.timeout(60)
def test_bad_event_is_typed_error():
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/x")
    try:
        with pytest.raises(MqttSinkError):
            sink.emit(["not", "a", "dict"])
        with pytest.raises(MqttSinkError):
            sink.emit({"type": "verdict", "blob": object()})
    finally:
        sink.close(timeout_s=0.2)


def test_missing_paho_names_the_install(monkeypatch):
    for name in [m for m in sys.modules if m == "paho" or m.startswith("paho.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "paho", None)  # makes `import paho...` raise ImportError
    with pytest.raises(BackendError, match="pip install paho-mqtt") as info:
        MqttSink("mqtt://127.0.0.1/t")
    assert "\n" not in str(info.value)
