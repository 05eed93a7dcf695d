"""What 50 Server-Sent-Events clients cost the frame loop, and what slow readers cost in memory.

Part 1: a simulated frame loop (fixed OpenCV work per frame + building a frame event + HttpSink.emit),
timed with 0 clients and with N clients that read the stream as fast as they can (in another process, as
phones would be), alternating the two conditions `--repeats` times. Prints ms/frame and emit µs side by
side and the slowdown ratio (50 clients / 0 clients).

Part 2: resident memory of this process after emitting `--slow-events` large events with 0 clients and
with N clients that connect and never read; the per-client queues are bounded, so the growth is bounded.

Usage: python benchmarks/bench_sse.py [--clients 50] [--frames 400] [--repeats 3]
"""

from __future__ import annotations

import multiprocessing as mp
import selectors
import socket
import statistics
import time

import click
import cv2
import numpy as np

from edge_runtime.http_sink import HttpSink


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _open_streams(port: int, n: int, rcvbuf: int | None) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        socks.append(s)
    return socks


def _reader_process(port: int, n: int, slow: bool, ready, stop, result) -> None:
    """Child process: n SSE connections; read everything (fast) or nothing (slow) until `stop`."""
    socks = _open_streams(port, n, 4096 if slow else None)
    ready.set()
    received = 0
    if slow:
        stop.wait(300)
    else:
        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, data=[b""])
        while not stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                try:
                    data = key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                buf = key.data[0] + data  # 5-byte tail: a marker split across reads counts once
                received += buf.count(b"data: ")
                key.data[0] = buf[-5:]
    for s in socks:
        s.close()
    result.put(received)


class Readers:
    def __init__(self, sink: HttpSink, n: int, slow: bool) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.stop, self.result = ctx.Event(), ctx.Event(), ctx.Queue()
        self.proc = ctx.Process(target=_reader_process, args=(sink.port, n, slow, self.ready, self.stop,
                                                             self.result), daemon=True)
        self.proc.start()
        if not self.ready.wait(60):
            raise RuntimeError("reader process did not connect")
        deadline = time.monotonic() + 30
        while sink.health()["clients"] < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {sink.health()['clients']} of {n} clients connected")
            time.sleep(0.01)

    def finish(self) -> int:
        self.stop.set()
        received = self.result.get(timeout=60)
        self.proc.join(timeout=30)
        return received


def _frame_event(i: int, k: int = 4) -> dict:
    return {"type": "frame", "session": "bench", "frame": i, "ts": time.time(), "model": "0" * 64,
            "probability": 0.42, "decision": "uncertain",
            "boxes": [[100.0 + j, 120.0, 260.0 + j, 280.0] for j in range(k)], "box_scores": [0.5] * k,
            "timings_ms": {"capture": 1.0, "gate": 0.5, "preprocess": 3.0, "global": 20.0, "crop": 0.4,
                           "parts": 9.0, "vote": 0.1, "total": 34.0}}


def _frame_loop(sink: HttpSink, frames: int, image: np.ndarray) -> tuple[float, float, float, float]:
    """For `frames` frames of fixed work + emit: wall ms per frame, wall µs per emit, CPU ms per frame of
    this whole process (loop + server + fan-out threads) and the loop thread's CPU µs per emit. The CPU
    figures hold up on a busy machine where wall time does not."""
    emit_s = emit_cpu = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(frames):
        work = cv2.GaussianBlur(image, (7, 7), 0)  # stands in for preprocessing + inference
        cv2.Laplacian(work, cv2.CV_32F).var()
        event = _frame_event(i)
        te, ce = time.perf_counter(), time.thread_time()
        sink.emit(event)
        emit_cpu += time.thread_time() - ce
        emit_s += time.perf_counter() - te
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    return 1000.0 * total / frames, 1e6 * emit_s / frames, 1000.0 * cpu / frames, 1e6 * emit_cpu / frames


@click.command()
@click.option("--clients", default=50, show_default=True, help="SSE clients in the loaded condition")
@click.option("--frames", default=400, show_default=True, help="frames per timed run")
@click.option("--repeats", default=3, show_default=True, help="alternating runs per condition (median shown)")
@click.option("--slow-events", default=3000, show_default=True, help="events emitted in the memory part")
@click.option("--queue-size", default=256, show_default=True, help="per-client SSE queue")
def main(clients: int, frames: int, repeats: int, slow_events: int, queue_size: int) -> None:
    cv2.setNumThreads(1)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)

    print(f"Part 1: frame loop, {frames} frames x {repeats} alternating runs, 640x480 blur+Laplacian per frame")
    results: dict[int, list[tuple[float, float, float, float]]] = {0: [], clients: []}
    delivered = []
    with HttpSink(port=0, queue_size=queue_size, max_clients=max(64, clients)) as sink:
        _frame_loop(sink, 50, image)  # warm-up
        for _ in range(repeats):
            results[0].append(_frame_loop(sink, frames, image))
            readers = Readers(sink, clients, slow=False)
            results[clients].append(_frame_loop(sink, frames, image))
            time.sleep(0.5)  # let the readers drain
            delivered.append(readers.finish())
            deadline = time.monotonic() + 10
            while sink.health()["clients"] and time.monotonic() < deadline:
                time.sleep(0.01)
        dropped = sink.health()["dropped"]
    med = {n: [statistics.median(r[k] for r in rs) for k in range(4)] for n, rs in results.items()}
    labels = ("wall ms per frame", "wall us per emit()", "process CPU ms/frame", "loop CPU us per emit()")
    print(f"{'':26}{'0 clients':>12}{f'{clients} clients':>12}{'ratio':>8}")
    for k, label in enumerate(labels):
        print(f"{label:26}{med[0][k]:12.3f}{med[clients][k]:12.3f}{med[clients][k] / med[0][k]:8.2f}")
    print(f"{'frames per second':26}{1000 / med[0][0]:12.1f}{1000 / med[clients][0]:12.1f}")
    expected = repeats * frames * clients
    print(f"events delivered to readers: {sum(delivered)} of {expected} ({100.0 * sum(delivered) / expected:.1f}%),"
          f" dropped by bounded queues: {dropped}")

    print(f"\nPart 2: memory, {slow_events} events of ~20 KB, queue {queue_size} per client")
    pad = "x" * 20000
    rows = []
    for n in (0, clients):
        with HttpSink(port=0, queue_size=queue_size, max_clients=max(64, clients)) as sink:
            readers = Readers(sink, n, slow=True) if n else None
            before = _rss_mib()
            t0 = time.perf_counter()
            for i in range(slow_events):
                sink.emit({**_frame_event(i), "pad": pad})
            emit_us = 1e6 * (time.perf_counter() - t0) / slow_events
            after = _rss_mib()
            health = sink.health()
            if readers:
                readers.finish()
        rows.append((n, after - before, emit_us, health["dropped"]))
    bound = queue_size * 20.5 / 1024  # clients share each encoded event: one copy however many queue it
    print(f"{'':24}{'0 clients':>14}{f'{clients} slow':>14}")
    print(f"{'RSS growth MiB':24}{rows[0][1]:14.1f}{rows[1][1]:14.1f}   (queue bound ~{bound:.0f} MiB)")
    print(f"{'emit() us per call':24}{rows[0][2]:14.1f}{rows[1][2]:14.1f}")
    print(f"{'events dropped':24}{rows[0][3]:14d}{rows[1][3]:14d}")


if __name__ == "__main__":
    main()
