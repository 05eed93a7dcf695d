"""JSON Lines sink: one event per line to stdout or a file, flushed after every line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from edge_runtime.errors import MgfenError
from edge_runtime.events import to_json


class JsonlSink:
    """emit(event: dict) writes one JSON line and flushes. path None or "-" means stdout.

    A file is opened for appending (runs never overwrite earlier events). A closed stdout pipe
    (`mgfen-scan ... | head`) disables the sink instead of raising on every frame.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path in (None, "-") else Path(path)
        if self.path is None:
            self._fh: TextIO | None = sys.stdout
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            except OSError as exc:
                raise MgfenError(f"{self.path}: cannot open for writing ({exc.strerror})") from None
        self.written = 0
        self.broken = False

    def emit(self, event: dict) -> None:
        if self._fh is None or self.broken:
            return
        try:
            self._fh.write(to_json(event) + "\n")
            self._fh.flush()
        except BrokenPipeError:
            self.broken = True
            return
        self.written += 1

    def close(self) -> None:
        if self._fh is not None and self.path is not None:
            self._fh.close()
        self._fh = None
