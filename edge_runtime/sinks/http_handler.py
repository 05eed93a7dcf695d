"""The HTTP request handling of the scanner's HTTP sink (edge_runtime/sinks/http_sink.py): the server class that
caps concurrent connections, and the handler that checks every request (size, Host, token, Content-Type,
Origin) before it routes it. Standard library only.

The handler reads the sink through `server.sink` (an HttpSink): its token and host checks, page, latest
JSON, health JSON, preview JPEG, SSE fan-out and new-session callback. It never imports http_sink, so the
two modules do not import each other.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("edge_runtime.sinks.http_sink")  # one logger for the sink and its handler

MAX_BODY = 64 * 1024
MAX_TARGET = 2048  # longest request target (path + query) accepted
NONCE_MARK = "__NONCE__"  # replaced in the live page by each response's CSP nonce


class SinkServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sink: Any) -> None:
        self.sink = sink
        super().__init__(address, SinkHandler)

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


class SinkServer6(SinkServer):
    address_family = socket.AF_INET6


class SinkHandler(BaseHTTPRequestHandler):
    server: SinkServer
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
            body = sink._page.replace(NONCE_MARK, nonce).encode()
            self._send_bytes(200, body, "text/html; charset=utf-8", {"Content-Security-Policy": csp})
        elif path == "/events":
            self._stream_events()
        elif path == "/api/latest":
            self._send_raw_json(200, sink._latest_json())
        elif path == "/health":
            self._send_raw_json(200, sink._health_json())
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
