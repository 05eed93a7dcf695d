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
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from edge_runtime.errors import MgfenError
from edge_runtime.sse_fanout import _Fanout

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_TARGET = 2048  # longest request target (path + query) accepted
MIN_TOKEN = 16
EVENT_TYPES = ("frame", "verdict", "retake", "error")
_PAGE_FILE = "live.html"
_NONCE_MARK = "__NONCE__"


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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sink: "HttpSink") -> None:
        self.sink = sink
        super().__init__(address, _Handler)

    def process_request(self, request, client_address) -> None:
        if not self.sink._enter_connection():
            try:
                request.settimeout(0.5)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.sink._leave_connection()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.sink._leave_connection()

    def handle_error(self, request, client_address) -> None:
        self.sink._count_request_error()
        log.debug("HTTP handler error from %s", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "mgfen-scanner"
    sys_version = ""
    timeout = 10.0  # socket timeout: slow or stalled clients cannot hold a thread forever

    # -- plumbing -------------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s %s", self.address_string(), format % args)

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler answers unknown methods with 501; any method we do not serve is a 405.
        if name.startswith("do_"):
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self._send_json(405, {"error": f"method {self.command} not allowed"}, {"Allow": "GET, POST"})

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # no headers, no status line: not worth serving
            self.send_error(400, "HTTP/0.9 is not supported")
            return False
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # JSON instead of the stdlib's HTML error page; also used for malformed request lines.
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the stdlib would answer without a status line
            self.request_version = "HTTP/1.0"
        try:
            self._send_json(code, {"error": message or self.responses.get(code, ("error",))[0]})
        except OSError:
            pass

    def _common_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")

    def _send_bytes(self, code: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self._common_headers()
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, code: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send_bytes(code, json.dumps(obj).encode(), "application/json", extra)

    def _send_raw_json(self, code: int, text: str) -> None:
        self._send_bytes(code, text.encode(), "application/json")

    # -- checks ---------------------------------------------------------------------------------------

    def _prelude(self, allow_query_token: bool) -> tuple[str, dict[str, list[str]]] | None:
        """Validate size, host and token; return (path, query) or None after sending an error."""
        sink = self.server.sink
        if len(self.path) > MAX_TARGET:
            self._send_json(414, {"error": "request target too long"})
            return None
        try:
            length = int(self.headers.get("Content-Length", "0") or "0")
        except ValueError:
            self._send_json(400, {"error": "bad Content-Length"})
            return None
        if length < 0:
            self._send_json(400, {"error": "bad Content-Length"})
            return None
        if length > MAX_BODY:
            self._send_json(413, {"error": f"body over {MAX_BODY} bytes"})
            return None
        if self.headers.get("Transfer-Encoding"):
            self._send_json(411, {"error": "chunked bodies are not accepted; send Content-Length"})
            return None
        try:
            url = urlsplit(self.path)
            query = parse_qs(url.query, max_num_fields=8)
        except ValueError:
            self._send_json(400, {"error": "malformed query"})
            return None
        if not url.path.startswith("/"):
            self._send_json(400, {"error": "malformed path"})
            return None
        if sink.token is None and not sink._host_allowed(self.headers.get("Host")):
            # Without a token only loopback names may address us (defeats DNS rebinding from a web page).
            self._send_json(403, {"error": "Host header is not a loopback name"})
            return None
        if not sink._authorised(self.headers.get("Authorization"), query if allow_query_token else {}):
            self._send_json(401, {"error": "missing or wrong token"}, {"WWW-Authenticate": "Bearer"})
            return None
        return url.path, query

    # -- routes ---------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        checked = self._prelude(allow_query_token=True)
        if checked is None:
            return
        path, _ = checked
        sink = self.server.sink
        if path == "/" or path == "/index.html":
            nonce = secrets.token_urlsafe(16)
            csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                   "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
                   "frame-ancestors 'none'")
            body = sink._page.replace(_NONCE_MARK, nonce).encode()
            self._send_bytes(200, body, "text/html; charset=utf-8", {"Content-Security-Policy": csp})
        elif path == "/events":
            self._stream_events()
        elif path == "/api/latest":
            self._send_raw_json(200, sink._latest_json())
        elif path == "/health":
            self._send_bytes(200, json.dumps(sink.health(), default=_json_default).encode(), "application/json")
        elif path == "/preview.jpg":
            jpeg = sink._preview
            if jpeg is None:
                self._send_json(404, {"error": "no preview yet"})
            else:
                self._send_bytes(200, jpeg, "image/jpeg")
        elif path == "/api/new-session":
            self._send_json(405, {"error": "use POST"}, {"Allow": "POST"})
        else:
            self._send_json(404, {"error": "no such route"})

    def do_POST(self) -> None:
        checked = self._prelude(allow_query_token=False)
        if checked is None:
            return
        path, _ = checked
        if path != "/api/new-session":
            code = 405 if path in ("/", "/events", "/api/latest", "/health", "/preview.jpg") else 404
            self._send_json(code, {"error": "no such POST route"})
            return
        length = int(self.headers.get("Content-Length", "0") or "0")
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            self._send_json(400, {"error": "body shorter than Content-Length"})
            return
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            # A cross-site form cannot send application/json without a CORS preflight we never grant.
            self._send_json(415, {"error": "Content-Type must be application/json"})
            return
        origin = self.headers.get("Origin")
        if origin and urlsplit(origin).netloc != (self.headers.get("Host") or ""):
            self._send_json(403, {"error": "cross-origin request refused"})
            return
        if body.strip():
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                parsed = None
            if not isinstance(parsed, dict):
                self._send_json(400, {"error": "body must be empty or a JSON object"})
                return
        code, payload = self.server.sink._new_session()
        self._send_json(code, payload)

    def _stream_events(self) -> None:
        fanout = self.server.sink._fanout
        stream = fanout.reserve(self.connection)
        if stream is None:
            self._send_json(503, {"error": "too many event-stream clients"})
            return
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Accel-Buffering", "no")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"retry: 2000\n\n")
        except OSError:
            fanout.release(stream)
            return
        fanout.activate(stream)
        # From here the fan-out thread owns the socket; this thread only closes it when the stream ends.
        stream.done.wait()


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
        self._page = (Path(__file__).parent / "static" / _PAGE_FILE).read_text("utf-8")  # 3.8: no resources.files

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

        server_cls = _Server6 if ":" in host.strip("[]") else _Server
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
