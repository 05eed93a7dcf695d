"""HTTP sink: a live page, Server-Sent Events, latest-verdict JSON, health and the annotated preview.

Standard library only. The server runs in background threads; `emit` serialises the event once, updates
the latest state and appends the bytes to one bounded log shared by all SSE clients, so it never waits on
the network and costs the same whatever the number of clients. One fan-out thread sends each client what
it is owed, coalesced into one write per client every `batch_s`. A slow client loses its oldest events
(counted in /health as "dropped"); memory stays bounded (/health "queued_bytes").

Routes (all GET unless noted):
  /               the live page (edge_runtime/static/live.html)
  /events         text/event-stream; every event as `data: <json>\\n\\n`, a `: keep-alive` comment when idle
  /api/latest     {"session", "verdict": last verdict event or null, "frame": last frame event or null}
  /health         {"status", "uptime_s", "frames", "verdicts", "retakes", "errors", "last_frame_age_s",
                   "clients", "dropped", "queued_bytes", ...}
  /preview.jpg    the latest JPEG given to update_preview (404 before the first one)
  POST /api/new-session   calls on_new_session(); body empty or a JSON object, Content-Type application/json

Binds 127.0.0.1 by default. A non-loopback bind needs a token; with a token every route needs
`Authorization: Bearer <token>` (GET routes also accept `?token=<token>`, for the page and EventSource).
The request checks and the routes are in edge_runtime/sinks/http_handler.py.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edge_runtime.errors import MgfenError
from edge_runtime.sinks.http_handler import MAX_BODY, SinkServer, SinkServer6  # noqa: F401 (MAX_BODY: part of the API)
from edge_runtime.sinks.sse_fanout import _Fanout

log = logging.getLogger(__name__)

MIN_TOKEN = 16
EVENT_TYPES = ("frame", "verdict", "retake", "error")
_PAGE_FILE = "live.html"


class HttpSinkError(MgfenError):
    """The HTTP sink cannot start (bad bind address, missing token, port in use) or was given bad input."""


def new_token() -> str:
    """A random URL-safe token suitable for `HttpSink(token=...)` (32 characters)."""
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays (the scanner's boxes and scores) without importing numpy here
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _finite(obj: Any) -> Any:
    """A copy with NaN/inf floats replaced by None (browsers' JSON.parse rejects NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def event_json(event: dict) -> str:
    """One event -> compact JSON text (no newlines; NaN/inf become null). Raises HttpSinkError."""
    if not isinstance(event, dict):
        raise HttpSinkError(f"an event must be a dict, got {type(event).__name__}")
    try:
        try:
            return json.dumps(event, separators=(",", ":"), default=_json_default, allow_nan=False)
        except ValueError:
            return json.dumps(_finite(event), separators=(",", ":"), default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HttpSinkError(f"event is not JSON-serialisable: {exc}") from None


class HttpSink:
    """A sink serving the live page, SSE, latest verdict, health and preview; see the module docstring.

    host/port: bind address; port 0 picks a free port (read `.port` / `.url`).
    token: required for a non-loopback host (>= 16 characters; `new_token()` makes one); with it every
        route needs the token.
    on_new_session: called with no arguments from a server thread when the page's "new scan" button is
        pressed (must be thread-safe); its return value (e.g. the new session id) is sent back as
        {"ok": true, "result": value}.
    queue_size: events kept for SSE clients (one shared log); a client further behind loses its oldest.
    max_clients: concurrent SSE clients; max_connections: concurrent HTTP connections (others get 503).
    keepalive_s: idle seconds between SSE keep-alive comments.
    stall_s: an SSE client whose socket accepts nothing for this long is disconnected.
    batch_s: SSE events reach clients at most this long after emit; those emitted meanwhile go out in one
        write per client (0: a write per event, which costs the frame loop more with many clients).
    extra_health: optional callable returning a JSON-able dict (e.g. Scanner.health) shown under
        "scanner" in /health.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        on_new_session: Callable[[], Any] | None = None,
        queue_size: int = 256,
        max_clients: int = 64,
        max_connections: int = 128,
        keepalive_s: float = 15.0,
        stall_s: float = 30.0,
        batch_s: float = 0.05,
        extra_health: Callable[[], dict] | None = None,
    ) -> None:
        if token is not None:
            if (not isinstance(token, str) or len(token) < MIN_TOKEN or not token.isascii()
                    or not token.isprintable() or any(c.isspace() for c in token)):
                raise HttpSinkError(f"the HTTP token must be at least {MIN_TOKEN} printable ASCII characters "
                                    "without spaces")
        if not is_loopback(host) and token is None:
            raise HttpSinkError(f"refusing to serve on non-loopback address {host!r} without a token "
                                "(give a token, or bind 127.0.0.1)")
        if not 0 <= int(port) <= 65535:
            raise HttpSinkError(f"bad HTTP port {port}")
        if (queue_size < 1 or max_clients < 1 or max_connections < 2 or keepalive_s <= 0 or stall_s <= 0
                or not 0 <= batch_s <= 1):
            raise HttpSinkError("queue_size, max_clients, keepalive_s and stall_s must be positive, "
                                "max_connections >= 2, batch_s in [0, 1]")
        self.host = host
        self.token = token
        self.keepalive_s = float(keepalive_s)
        self._on_new_session = on_new_session
        self._extra_health = extra_health
        self._max_connections = int(max_connections)
        self._page = (Path(__file__).parent.parent / "static" / _PAGE_FILE).read_text("utf-8")  # 3.8: no resources.files

        self._lock = threading.Lock()
        self._connections = 0
        self._connections_done = threading.Condition(self._lock)
        self._started = time.monotonic()
        self._counts = {t: 0 for t in EVENT_TYPES}
        self._counts["other"] = 0
        self._request_errors = 0
        self._last_frame_t: float | None = None
        self._latest_frame: str | None = None
        self._latest_verdict: str | None = None
        self._session: str | None = None
        self._preview: bytes | None = None
        self._closed = False

        server_cls = SinkServer6 if ":" in host.strip("[]") else SinkServer
        try:
            self._server = server_cls((host.strip("[]"), int(port)), self)
        except OSError as exc:
            raise HttpSinkError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
        self.port = int(self._server.server_address[1])
        self._fanout = _Fanout(int(queue_size), int(max_clients), self.keepalive_s, float(stall_s),
                               float(batch_s))
        self._allowed_hosts = self._loopback_host_names()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"mgfen-http-{self.port}", daemon=True)
        self._thread.start()

    # -- public API -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """http://HOST:PORT/ of the live page (no token)."""
        host = f"[{self.host.strip('[]')}]" if ":" in self.host.strip("[]") else self.host
        return f"http://{host}:{self.port}/"

    def emit(self, event: dict) -> None:
        """Publish one event (CONTRACTS.md "Events") to every SSE client and the latest state.

        Never blocks on the network and costs the same whatever the number of clients: the event is
        encoded once and appended to the SSE log; the fan-out thread is woken at most once per batch.
        Raises HttpSinkError for an event that is not a JSON-serialisable dict."""
        text = event_json(event)
        data = b"data: " + text.encode() + b"\n\n"
        kind = event.get("type")
        with self._lock:
            if self._closed:
                return
            self._counts[kind if kind in self._counts else "other"] += 1
            if "session" in event:
                self._session = str(event["session"])
            if kind == "frame":
                self._latest_frame = text
                self._last_frame_t = time.monotonic()
            elif kind == "verdict":
                self._latest_verdict = text
        self._fanout.publish(data)

    def update_preview(self, jpeg: bytes) -> None:
        """Replace the image served at /preview.jpg (JPEG bytes, e.g. from preview.preview_jpeg)."""
        if not isinstance(jpeg, (bytes, bytearray, memoryview)):
            raise HttpSinkError(f"update_preview needs JPEG bytes, got {type(jpeg).__name__}")
        jpeg = bytes(jpeg)
        if not jpeg.startswith(b"\xff\xd8"):
            raise HttpSinkError("update_preview was given bytes that are not a JPEG")
        self._preview = jpeg  # one reference swap; readers see the old or the new image, never a mix

    def _health_json(self) -> str:
        return json.dumps(self.health(), default=_json_default)

    def health(self) -> dict:
        """The /health document."""
        with self._lock:
            age = None if self._last_frame_t is None else round(time.monotonic() - self._last_frame_t, 3)
            doc = {
                "status": "closed" if self._closed else "ok",
                "uptime_s": round(time.monotonic() - self._started, 3),
                "frames": self._counts["frame"],
                "verdicts": self._counts["verdict"],
                "retakes": self._counts["retake"],
                "errors": self._counts["error"],
                "events": sum(self._counts.values()),
                "last_frame_age_s": age,
                "session": self._session,
                "clients": self._fanout.count,
                "connections": self._connections,
                "request_errors": self._request_errors,
                "preview": self._preview is not None,
            }
        doc["dropped"] = self._fanout.dropped()
        doc["queued_bytes"] = self._fanout.queued_bytes()
        if self._extra_health is not None:
            try:
                extra = self._extra_health()
                json.dumps(extra, default=_json_default)
                doc["scanner"] = extra
            except Exception as exc:  # the scanner's counters must not break /health
                doc["scanner"] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        return doc

    def close(self) -> None:
        """Stop serving: end SSE streams, stop the server thread and wait (<= 5 s) for handler threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._fanout.stop()  # ends every SSE stream, so their handler threads return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)
        deadline = time.monotonic() + 5.0
        with self._connections_done:
            while self._connections > 0 and time.monotonic() < deadline:
                self._connections_done.wait(0.1)

    def __enter__(self) -> "HttpSink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- used by the handler --------------------------------------------------------------------------

    def _loopback_host_names(self) -> frozenset[str]:
        names = {"localhost", "127.0.0.1", "[::1]", self.host.lower()}
        if ":" in self.host.strip("[]"):
            names.add(f"[{self.host.strip('[]').lower()}]")
        return frozenset(names | {f"{n}:{self.port}" for n in names})

    def _host_allowed(self, host_header: str | None) -> bool:
        return host_header is None or host_header.strip().lower() in self._allowed_hosts

    def _authorised(self, auth_header: str | None, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        expected = self.token.encode()
        if auth_header:
            scheme, _, value = auth_header.strip().partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected):
                return True
        given = query.get("token", [])
        return len(given) == 1 and hmac.compare_digest(given[0].encode("utf-8", "replace"), expected)

    def _latest_json(self) -> str:
        with self._lock:
            session = json.dumps(self._session)
            return (f'{{"session":{session},"verdict":{self._latest_verdict or "null"},'
                    f'"frame":{self._latest_frame or "null"}}}')

    def _new_session(self) -> tuple[int, dict]:
        if self._on_new_session is None:
            return 503, {"error": "no scanner is attached to start a new session"}
        try:
            result = self._on_new_session()
        except Exception as exc:  # the scanner's problem must not kill the server thread
            log.warning("new-session callback failed: %s", exc)
            return 500, {"error": f"new session failed: {type(exc).__name__}: {exc}".splitlines()[0]}
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            result = str(result)
        return 200, {"ok": True, "result": result}

    def _enter_connection(self) -> bool:
        with self._lock:
            if self._closed or self._connections >= self._max_connections:
                return False
            self._connections += 1
            return True

    def _leave_connection(self) -> None:
        with self._lock:
            self._connections -= 1
            self._connections_done.notify_all()

    def _count_request_error(self) -> None:
        with self._lock:
            self._request_errors += 1
