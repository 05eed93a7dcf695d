"""Peak memory (process RSS) of the scanner on one very large photo and on a decompression bomb.

    python benchmarks/bench_memory.py                 # 12000 x 12000 JPEG (432 MB decoded), 20000^2 bomb
    python benchmarks/bench_memory.py --side 8000 --json runs/bench_memory.json

Each row is a fresh child process; its peak resident set size comes from the kernel (os.wait4's
ru_maxrss), so OpenCV's and onnxruntime's own buffers count, unlike tracemalloc's Python-heap view.
Rows, side by side in one run:
  import         python importing the scanner CLI (the floor every other row stands on);
  decode only    the same, then cv2.imread of the large JPEG (one decoded frame: the least a scan needs);
  scan large     `mgfen-scan run` on a folder holding only the large JPEG (fake bundle, tests/fake_bundle.py);
  scan bomb      `mgfen-scan run` on a PNG whose header claims 20000 x 20000 16-bit RGBA (3.2 GB).
"above import" divides the row's RSS minus the import row's by the decoded frame size (side^2 x 3 bytes).
Linux only (ru_maxrss in KiB).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def peak_rss_mb(cmd: list[str]) -> float:
    """Run `cmd` to completion; its peak RSS in MB (1e6 bytes). Raises RuntimeError on a non-zero exit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {err[-400:]}")
    return usage.ru_maxrss * 1024 / 1e6


def bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height 16-bit RGBA with an empty IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=12_000, help="side of the large square JPEG in pixels")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    from fake_bundle import make_fake_bundle

    with tempfile.TemporaryDirectory(prefix="mgfen-mem-") as tmp:
        tmp_path = Path(tmp)
        bundle = make_fake_bundle(tmp_path / "bundle")
        large, bomb = tmp_path / "large", tmp_path / "bomb"
        large.mkdir()
        bomb.mkdir()
        frame = np.empty((args.side, args.side, 3), np.uint8)
        frame[:] = (60, 90, 200)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])
        del frame
        assert ok
        (large / "large.jpg").write_bytes(buf.tobytes())
        (bomb / "bomb.png").write_bytes(bomb_png(20_000, 20_000))
        py = [sys.executable, "-c"]
        scan = [sys.executable, "-m", "edge_runtime.cli.scan_cli", "run", "--bundle", str(bundle), "--no-gate",
                "--min-frames", "1", "--out", str(tmp_path / "events.jsonl"), "--source"]
        rows = {
            "import": peak_rss_mb(py + ["import edge_runtime.cli.scan_cli"]),
            "decode only": peak_rss_mb(py + [f"import edge_runtime.cli.scan_cli, cv2; cv2.imread({str(large / 'large.jpg')!r})"]),
            "scan large": peak_rss_mb(scan + [f"file://{large}"]),
            "scan bomb": peak_rss_mb(scan + [f"file://{bomb}"]),
        }
    decoded = args.side * args.side * 3 / 1e6
    print(f"large frame {args.side} x {args.side}: {decoded:.0f} MB decoded; python {sys.version.split()[0]}, "
          f"OpenCV {cv2.__version__}")
    print(f"{'row':<12} {'peak RSS MB':>12} {'above import MB':>16} {'above import / decoded':>23}")
    base = rows["import"]
    for name, mb in rows.items():
        print(f"{name:<12} {mb:12.0f} {mb - base:16.0f} {(mb - base) / decoded:23.2f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"side": args.side, "decoded_mb": decoded, "peak_rss_mb": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
