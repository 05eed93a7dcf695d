"""MQTT sink: publishes scanner events to a broker (fleet uplink), QoS 1, reconnecting in the background.

URI: `mqtt://[USER[:PASSWORD]@]HOST[:PORT]/TOPIC` (port 1883) or `mqtts://...` (TLS, port 8883).
Verdict events go to TOPIC/verdict; other types (TOPIC/frame, TOPIC/retake, TOPIC/error) only when asked
for. TOPIC/status carries a retained "online"/"offline" (the broker publishes "offline" as our last will).

`emit` only encodes the event and appends it to a bounded queue (oldest dropped when full); a worker
thread hands events to paho-mqtt while connected, and paho resends unacknowledged QoS 1 messages after a
reconnect. paho-mqtt >= 2 is imported lazily (`pip install paho-mqtt`, extra `serve`).
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_runtime.errors import BackendError, MgfenError
from edge_runtime.sinks.http_sink import HttpSinkError, event_json

log = logging.getLogger(__name__)

EVENT_TYPES = ("frame", "verdict", "retake", "error")
MAX_UNACKED = 64  # events handed to paho and not yet acknowledged by the broker


class MqttSinkError(MgfenError):
    """A bad MQTT URI or option, or an event that cannot be published."""


@dataclass(frozen=True)
class MqttTarget:
    """Where to publish: parsed from an mqtt:// or mqtts:// URI."""

    host: str
    port: int
    topic: str
    tls: bool = False
    username: str | None = None
    password: str | None = None


def parse_mqtt_uri(uri: str) -> MqttTarget:
    """`mqtt://[user[:pass]@]host[:port]/topic[/sub...]` -> MqttTarget. Raises MqttSinkError."""
    if not isinstance(uri, str) or not uri:
        raise MqttSinkError("empty MQTT URI; expected mqtt://HOST[:PORT]/TOPIC")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise MqttSinkError(f"bad MQTT URI {uri!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttSinkError(f"bad MQTT URI {uri!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise MqttSinkError(f"bad MQTT URI {uri!r}: no host; expected mqtt://HOST[:PORT]/TOPIC")
    if parts.query or parts.fragment or "#" in uri:
        raise MqttSinkError(f"bad MQTT URI {uri!r}: no query, fragment or # wildcard allowed")
    topic = unquote(parts.path.lstrip("/")).rstrip("/")
    if not topic:
        raise MqttSinkError(f"bad MQTT URI {uri!r}: no topic; expected mqtt://HOST[:PORT]/TOPIC")
    if any(c in topic for c in "+#\x00") or "//" in topic:
        raise MqttSinkError(f"bad MQTT topic {topic!r}: no wildcards (+ #), NUL or empty levels")
    if len(topic.encode()) > 1024:
        raise MqttSinkError("MQTT topic longer than 1024 bytes")
    tls = parts.scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        topic=topic,
        tls=tls,
        username=unquote(parts.username) if parts.username is not None else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _import_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise BackendError("the MQTT sink needs paho-mqtt >= 2: pip install paho-mqtt") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise BackendError("the MQTT sink needs paho-mqtt >= 2 (found 1.x): pip install -U paho-mqtt")
    return mqtt


class MqttSink:
    """Publish events to `uri` (see module docstring).

    types: event types to publish; default only "verdict".
    qos: 0, 1 or 2 (default 1). retain_verdict: publish verdicts retained (a late subscriber gets the last).
    queue_size: events buffered while disconnected (oldest dropped, counted in stats()["dropped"]).
    client_id: MQTT client id (default mgfen-<random>). keepalive_s: MQTT keep-alive.
    reconnect_min_s / reconnect_max_s: exponential reconnect back-off bounds.
    """

    def __init__(
        self,
        uri: str,
        types: tuple[str, ...] = ("verdict",),
        qos: int = 1,
        retain_verdict: bool = False,
        queue_size: int = 1000,
        client_id: str | None = None,
        keepalive_s: int = 30,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.target = parse_mqtt_uri(uri)
        unknown = [t for t in types if t not in EVENT_TYPES]
        if unknown or not types:
            raise MqttSinkError(f"unknown MQTT event types {unknown}; choose from {EVENT_TYPES}")
        if qos not in (0, 1, 2):
            raise MqttSinkError(f"MQTT QoS must be 0, 1 or 2, got {qos}")
        if queue_size < 1 or keepalive_s < 5 or not 0 < reconnect_min_s <= reconnect_max_s:
            raise MqttSinkError("queue_size >= 1, keepalive_s >= 5 and 0 < reconnect_min_s <= reconnect_max_s")
        mqtt = _import_paho()
        self._ok_codes = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: paho keeps and resends it
        self.types = tuple(types)
        self.qos = int(qos)
        self.retain_verdict = bool(retain_verdict)
        self.status_topic = f"{self.target.topic}/status"

        self._cond = threading.Condition()
        self._queue: deque[tuple[str, bytes, bool]] = deque(maxlen=int(queue_size))
        self._connected = False
        self._closing = False
        self._stats = {"published": 0, "acked": 0, "dropped": 0, "connects": 0, "disconnects": 0}
        self._last_error: str | None = None
        # mids handed to paho and not yet acknowledged; acks that beat the worker's bookkeeping wait in
        # _early_acks; the status messages' mids are not ours to count
        self._pending: set[int] = set()
        self._early_acks: set[int] = set()
        self._status_mids: set[int] = set()

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=client_id or f"mgfen-{secrets.token_hex(4)}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set_context(ssl.create_default_context())
        client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=reconnect_max_s)
        # paho's own store of unacknowledged messages stays bounded too (room for the status messages)
        client.max_queued_messages_set(MAX_UNACKED + 8)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client
        try:
            client.connect_async(self.target.host, self.target.port, keepalive=int(keepalive_s))
        except (OSError, ValueError) as exc:
            raise MqttSinkError(f"cannot use MQTT broker {self.target.host}:{self.target.port}: {exc}") from None
        client.loop_start()  # network thread: connects, retries with back-off, reconnects
        self._worker = threading.Thread(target=self._run, name="mgfen-mqtt", daemon=True)
        self._worker.start()

    # -- paho callbacks (network thread) --------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._last_error = f"broker refused connection: {reason_code}"
            log.warning("MQTT %s", self._last_error)
            return
        info = client.publish(self.status_topic, b"online", qos=1, retain=True)
        with self._cond:
            self._status_mids.add(info.mid)  # its ack is handled on this thread, after we return
            self._connected = True
            self._stats["connects"] += 1
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            if self._connected:
                self._stats["disconnects"] += 1
            self._connected = False
            if not self._closing:
                self._last_error = f"disconnected: {reason_code}"

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._cond:
            if mid in self._status_mids:
                self._status_mids.discard(mid)
                return
            if mid in self._pending:
                self._pending.discard(mid)
            else:
                self._early_acks.add(mid)
            self._stats["acked"] += 1
            self._cond.notify_all()

    # -- worker ---------------------------------------------------------------------------------------

    def _can_publish(self) -> bool:
        # caller holds _cond; while too many are unacknowledged, events wait in our drop-oldest queue
        return self._connected and bool(self._queue) and len(self._pending) < MAX_UNACKED

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and not self._can_publish():
                    self._cond.wait(0.5)
                if not self._can_publish():
                    return  # closing (what is left is counted as dropped in close())
                topic, payload, retain = self._queue.popleft()
            info = self._client.publish(topic, payload, qos=self.qos, retain=retain)
            with self._cond:
                if info.rc in self._ok_codes:
                    self._stats["published"] += 1
                    if info.mid in self._early_acks:
                        self._early_acks.discard(info.mid)
                    else:
                        self._pending.add(info.mid)
                else:
                    self._stats["dropped"] += 1
                    self._last_error = f"publish failed with code {info.rc}"

    # -- public API -----------------------------------------------------------------------------------

    def emit(self, event: dict) -> None:
        """Queue one event for publishing if its type is in `types`; never waits on the network.
        Raises MqttSinkError for an event that is not a JSON-serialisable dict."""
        try:
            kind = event.get("type")
        except AttributeError:
            raise MqttSinkError(f"an event must be a dict, got {type(event).__name__}") from None
        if kind not in self.types:
            return
        try:
            payload = event_json(event).encode()
        except HttpSinkError as exc:
            raise MqttSinkError(str(exc)) from None
        item = (f"{self.target.topic}/{kind}", payload, self.retain_verdict and kind == "verdict")
        with self._cond:
            if self._closing:
                return
            if len(self._queue) == self._queue.maxlen:
                self._stats["dropped"] += 1
            self._queue.append(item)
            self._cond.notify_all()

    def stats(self) -> dict:
        """Counters: connected, queued, published (handed to paho), acked (QoS>0: broker acknowledged),
        dropped, connects, disconnects, last_error."""
        with self._cond:
            return {"connected": self._connected, "queued": len(self._queue), **self._stats,
                    "last_error": self._last_error}

    def close(self, timeout_s: float = 3.0) -> None:
        """Flush what can be flushed within timeout_s (queued events and QoS acks), then say "offline"
        and disconnect. Events still queued after that are counted as dropped."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if self._closing:
                return
            while time.monotonic() < deadline and self._connected and (
                    self._queue or self._pending):
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._closing = True
            self._stats["dropped"] += len(self._queue)
            self._queue.clear()
            connected = self._connected
            self._cond.notify_all()
        self._worker.join(timeout=2.0)
        if connected:
            info = self._client.publish(self.status_topic, b"offline", qos=1, retain=True)
            with self._cond:  # a status ack is not an event ack (it may have come before this line)
                if info.mid in self._early_acks:
                    self._early_acks.discard(info.mid)
                    self._stats["acked"] -= 1
                else:
                    self._status_mids.add(info.mid)
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> "MqttSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
