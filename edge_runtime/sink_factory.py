"""Which sinks a scan writes its events to: the one place `mgfen-scan run` gets its sinks from.

Today: JSON Lines to stdout or to --out FILE.

EXTENSION POINT for the HTTP/SSE/MQTT sinks: add their click options to SINK_OPTIONS (e.g. --serve
HOST:PORT, --token T, --mqtt URI) and build the sinks in make_sinks from `options` (a dict holding
those options' values by parameter name). scan_cli applies SINK_OPTIONS to `run` and passes every
value through untouched, so nothing else needs editing. `control` is the running Scanner: it offers
`new_session()` (thread-safe; for POST /api/new-session) and `health()` (a dict of counters). A sink may
also define `preview(frame_bgr, heatmap, event)` to receive frames for a live preview (see
edge_runtime/scanner.py). Raise an MgfenError subclass for bad option values: the CLI prints it as one
line and exits non-zero.
"""

from __future__ import annotations

from edge_runtime.sinks_jsonl import JsonlSink

# click.Option objects (or decorators) added to `mgfen-scan run`; the sinks helper fills this list.
SINK_OPTIONS: list = []


def sink_options(command):
    """Decorate the `run` command with SINK_OPTIONS (in order, first option listed first in --help)."""
    for option in reversed(SINK_OPTIONS):
        command = option(command)
    return command


def make_sinks(out: str | None, control, options: dict) -> list:
    """Sinks for one scan: JSON Lines to `out` (None or "-": stdout), plus whatever `options` asks for."""
    return [JsonlSink(out)]
