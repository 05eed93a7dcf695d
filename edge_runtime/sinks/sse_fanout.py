"""Server-Sent Events fan-out for the HTTP sink (edge_runtime/sinks/http_sink.py): one thread writes every
event to every SSE socket with non-blocking sends, from one bounded log shared by all clients.
Standard library only."""

from __future__ import annotations

import itertools
import logging
import math
import selectors
import socket
import threading
import time
from collections import deque

log = logging.getLogger("edge_runtime.sinks.http_sink")


KEEPALIVE = b": keep-alive\n\n"
_MAX_IOV = 512  # buffers per sendmsg (Linux allows 1024)
_SNDBUF = 256 * 1024  # kernel send buffer per SSE socket: caps kernel memory held for a stuck client


class _Stream:
    """One SSE connection as the fan-out thread sees it: the sequence number of the next event to send
    from the shared log, and the rest of an event (or keep-alive) of which only a part was sent."""

    __slots__ = ("sock", "seq", "current", "dropped", "last_write", "last_progress", "want_write", "done")

    def __init__(self, sock: socket.socket, seq: int) -> None:
        self.sock = sock
        self.seq = seq
        self.current: memoryview | None = None
        self.dropped = 0
        now = time.monotonic()
        self.last_write = now  # for keep-alives
        self.last_progress = now  # last time the client took bytes or was owed none (stall detection)
        self.want_write = False
        self.done = threading.Event()  # set when the stream is over; the handler thread then closes it


class _Fanout:
    """A single thread writes every event to every SSE socket with non-blocking sends.

    Events live once, in a shared log of the last queue_size encoded events (a bounded deque of bytes);
    each stream only holds its position in it. publish() is O(1) whatever the number of clients: one
    append under a lock, and a wake-up through a socket pair only when the thread is not already due to
    look. The thread makes at most one pass per batch_s, sending every event a client is owed in one
    sendmsg (no copies, one system call per client per pass instead of one per event); a client that falls
    more than queue_size events behind loses its oldest ones, and one whose socket stays full for stall_s
    seconds is disconnected."""

    def __init__(self, queue_size: int, max_clients: int, keepalive_s: float, stall_s: float,
                 batch_s: float) -> None:
        self._queue_size = queue_size
        self._max_clients = max_clients
        self._keepalive_s = keepalive_s
        self._stall_s = stall_s
        self._batch_s = batch_s
        self._lock = threading.Lock()
        self._log: deque[bytes] = deque()
        self._log_bytes = 0
        self._head = 0  # sequence number of the next event published; the log holds [head - len, head)
        self._new: list[_Stream] = []
        self._reserved: list[_Stream] = []  # headers being sent: their position in the log is fixed already
        self._count = 0  # reserved + active streams
        self._running = True
        self._wake_pending = False
        self._streams: dict[int, _Stream] = {}  # changed by the fan-out thread only, under the lock
        self.dropped_gone = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="mgfen-sse", daemon=True)
        self._thread.start()

    # -- any thread --------------------------------------------------------------------------------------

    @property
    def count(self) -> int:
        return self._count

    def _all_streams(self) -> list[_Stream]:
        return list(self._streams.values()) + self._new + self._reserved  # caller holds the lock

    def dropped(self) -> int:
        """Events lost to slow clients so far (one per client per event)."""
        with self._lock:
            base = self._head - len(self._log)
            return self.dropped_gone + sum(s.dropped + max(0, base - s.seq) for s in self._all_streams())

    def queued_bytes(self) -> int:
        """Bytes held for SSE clients: the shared log plus the unsent rest of at most one event per client.
        Bounded by (queue_size + clients) x the largest event, however slowly the clients read."""
        with self._lock:
            return self._log_bytes + sum(len(s.current) for s in self._all_streams() if s.current is not None)

    def publish(self, data: bytes) -> None:
        with self._lock:
            if not self._running or self._count == 0:
                return  # nobody listens: a later client starts with the events after it connected
            queue = self._log
            if len(queue) == self._queue_size:
                self._log_bytes -= len(queue.popleft())
            queue.append(data)
            self._log_bytes += len(data)
            self._head += 1
            if self._wake_pending:
                return
            self._wake_pending = True
        self._wake()

    def reserve(self, sock: socket.socket) -> _Stream | None:
        """Claim a client slot (None when full or stopped); activate() it once the headers are sent."""
        with self._lock:
            if not self._running or self._count >= self._max_clients:
                return None
            self._count += 1
            stream = _Stream(sock, self._head)  # events published from now on are for it
            self._reserved.append(stream)
        return stream

    def activate(self, stream: _Stream) -> None:
        with self._lock:
            self._reserved.remove(stream)
            if not self._running:
                self._count -= 1
                stream.done.set()
                return
            self._new.append(stream)
        self._wake()

    def release(self, stream: _Stream) -> None:
        """Give back a reserved slot that was never activated."""
        with self._lock:
            self._reserved.remove(stream)
            self._forget(stream)
        stream.done.set()

    def stop(self) -> None:
        with self._lock:
            self._running = False
        self._wake()
        self._thread.join(timeout=5.0)
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full (a wake-up is pending anyway) or already closed
            pass

    def _forget(self, stream: _Stream) -> None:
        """Count a finished stream's losses and free its slot (caller holds the lock)."""
        base = self._head - len(self._log)
        self.dropped_gone += stream.dropped + max(0, base - stream.seq)
        self._count -= 1
        if self._count == 0:  # nobody left to send the log to
            self._log.clear()
            self._log_bytes = 0

    # -- fan-out thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        head = 0
        last_pass = -math.inf
        next_timer = 0.0  # when the next keep-alive or stall check is due
        woke = True  # events (or new streams, or stop) may be waiting for a pass
        try:
            while True:
                now = time.monotonic()
                # A pass at most every batch_s, so that events emitted meanwhile go out in one write per client.
                if (woke and now >= last_pass + self._batch_s) or now >= next_timer:
                    with self._lock:
                        running = self._running
                        new, self._new = self._new, []
                        for stream in new:
                            self._streams[id(stream)] = stream
                        head = self._head
                        self._wake_pending = False
                    if not running:
                        break
                    woke, last_pass = False, now
                    next_timer = now + self._pass(new, head, now)
                timeout = next_timer - now
                if woke:
                    timeout = min(timeout, last_pass + self._batch_s - now)
                for key, mask in self._sel.select(timeout=max(0.0, timeout)):
                    stream = key.data
                    if stream is None:
                        self._drain_wake()
                        woke = True
                        continue
                    if id(stream) not in self._streams:
                        continue
                    if mask & selectors.EVENT_READ:
                        self._read(stream)
                    if mask & selectors.EVENT_WRITE and id(stream) in self._streams:
                        self._flush(stream)  # a slow reader took some: send more at once
        except Exception:  # never expected; log it and end every stream rather than hang clients
            log.exception("SSE fan-out thread failed")
        finally:
            with self._lock:
                self._running = False
                leftover, self._new = self._new, []
                for stream in leftover:
                    self._streams[id(stream)] = stream
            for stream in list(self._streams.values()):
                self._drop(stream)

    def _pass(self, new: list[_Stream], head: int, now: float) -> float:
        """Register new streams, send every stream what it is owed (or a keep-alive when idle), drop stalled
        ones. Returns the seconds until the next keep-alive or stall check is due."""
        for stream in new:
            stream.sock.setblocking(False)
            try:
                stream.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            except OSError:
                pass
            self._sel.register(stream.sock, selectors.EVENT_READ, stream)
        timeout = 1.0
        for stream in list(self._streams.values()):
            if stream.want_write:  # its socket is full: select says when it takes more
                if now - stream.last_progress > self._stall_s:
                    self._drop(stream)  # full for stall_s: a dead or stuck reader
                else:
                    timeout = min(timeout, stream.last_progress + self._stall_s - now)
                continue
            if stream.current is None and stream.seq >= head:
                idle = now - stream.last_write
                if idle < self._keepalive_s:
                    stream.last_progress = now
                    timeout = min(timeout, self._keepalive_s - idle)
                    continue
                stream.current = memoryview(KEEPALIVE)
            self._flush(stream)
            timeout = min(timeout, self._stall_s if stream.want_write else self._keepalive_s)
        return max(0.005, timeout)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _read(self, stream: _Stream) -> None:
        # An EventSource sends nothing after its request; readable means it closed (or sent junk we ignore).
        try:
            if not stream.sock.recv(4096):
                self._drop(stream)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(stream)

    def _owed(self, stream: _Stream) -> tuple[int, tuple[bytes, ...]]:
        """(head, the events `stream` is owed from the log, at most _MAX_IOV of them). References only,
        taken under the lock and not kept, so the log alone bounds what is held for the clients."""
        with self._lock:
            head, log = self._head, self._log
            base = head - len(log)
            if stream.seq < base:  # it fell more than queue_size events behind: the oldest are gone
                stream.dropped += base - stream.seq
                stream.seq = base
            start = stream.seq - base
            return head, (tuple(itertools.islice(log, start, start + _MAX_IOV)) if start < len(log) else ())

    def _flush(self, stream: _Stream) -> None:
        """Send what `stream` is owed until its socket is full: one sendmsg for many events."""
        head = stream.seq
        try:
            while True:
                head, bufs = self._owed(stream)
                if stream.current is not None:
                    bufs = (stream.current,) + bufs
                if not bufs:
                    break
                sent = stream.sock.sendmsg(bufs)
                stream.last_write = stream.last_progress = time.monotonic()
                if stream.current is not None:
                    if sent < len(stream.current):
                        stream.current = stream.current[sent:]
                        break
                    sent -= len(stream.current)
                    stream.current = None
                    bufs = bufs[1:]
                for data in bufs:  # advance past what the socket took; a partly sent event becomes current
                    if sent < len(data):
                        if sent:
                            stream.current = memoryview(data)[sent:]
                            stream.seq += 1
                        break
                    sent -= len(data)
                    stream.seq += 1
                else:
                    continue  # all taken: more may be owed past _MAX_IOV
                break  # the socket is full
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(stream)
            return
        owed = stream.current is not None or stream.seq < head
        if not owed:
            stream.last_progress = time.monotonic()
        if owed != stream.want_write:
            stream.want_write = owed
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if owed else 0)
            self._sel.modify(stream.sock, events, stream)

    def _drop(self, stream: _Stream) -> None:
        with self._lock:
            if self._streams.pop(id(stream), None) is None:
                return
            self._forget(stream)
        try:
            self._sel.unregister(stream.sock)
        except (KeyError, ValueError, OSError):
            pass
        stream.done.set()
