"""Which sinks a scan writes its events to: the one place `mgfen-scan run` gets its sinks from.

JSON Lines to stdout or to --out FILE; with --serve the live page / SSE / JSON API server (HttpSink) and
its annotated preview (PreviewFeeder); with --mqtt an MQTT uplink (MqttSink).

EXTENSION POINT: add click options to SINK_OPTIONS and build the sinks in make_sinks from `options` (a
dict holding those options' values by parameter name). scan_cli applies SINK_OPTIONS to `run` and passes
every value through untouched, so nothing else needs editing. `control` is the running Scanner: it offers
`new_session()` (thread-safe; for POST /api/new-session) and `health()` (a dict of counters). A sink may
also define `preview(frame_bgr, heatmap, event)` to receive frames for a live preview (see
edge_runtime/scanner.py). Raise an MgfenError subclass for bad option values: the CLI prints it as one
line and exits non-zero.
"""

from __future__ import annotations

import sys

import click

from edge_runtime.errors import MgfenError
from edge_runtime.sinks.sinks_jsonl import JsonlSink

# click.Option decorators added to `mgfen-scan run`, first listed first in --help.
SINK_OPTIONS: list = [
    click.option("--serve", "serve", metavar="[HOST:]PORT", default=None,
                 help="Serve the live page, SSE (/events), /api/latest and /health on HOST:PORT "
                      "(HOST defaults to 127.0.0.1; any other host needs --token)."),
    click.option("--token", "token", envvar="MGFEN_TOKEN", default=None, metavar="TOKEN",
                 help="Bearer token every HTTP route then requires (>= 16 characters; env MGFEN_TOKEN)."),
    click.option("--preview-interval", "preview_interval", type=float, default=0.2, show_default=True,
                 help="Seconds between annotated preview images for the live page (0: no preview)."),
    click.option("--mqtt", "mqtt", metavar="URI", default=None,
                 help="Publish verdicts to mqtt://HOST[:PORT]/TOPIC (TOPIC/verdict, QoS 1)."),
    click.option("--mqtt-events", "mqtt_events", default="verdict", show_default=True,
                 help="Comma-separated event types to publish over MQTT: verdict, frame, retake, error."),
]


def sink_options(command):
    """Decorate the `run` command with SINK_OPTIONS (in order, first option listed first in --help)."""
    for option in reversed(SINK_OPTIONS):
        command = option(command)
    return command


def parse_serve(value: str) -> tuple[str, int]:
    """"8080" | "HOST:8080" | "[::1]:8080" -> (host, port); host defaults to 127.0.0.1."""
    from edge_runtime.sinks.http_sink import HttpSinkError

    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise HttpSinkError(f"--serve expects [HOST:]PORT, got {value!r}") from None
    if not 0 <= number < 65536:
        raise HttpSinkError(f"--serve port must be 0..65535 (0: any free port), got {number}")
    return host, number


def make_sinks(out: str | None, control, options: dict) -> list:
    """Sinks for one scan: JSON Lines to `out` (None or "-": stdout), plus whatever `options` asks for."""
    sinks: list = []
    try:
        serve = options.get("serve")
        if serve:
            from edge_runtime.sinks.http_sink import HttpSink
            from edge_runtime.sinks.preview import PreviewFeeder

            host, port = parse_serve(serve)
            http = HttpSink(host=host, port=port, token=options.get("token"),
                            on_new_session=getattr(control, "new_session", None),
                            extra_health=getattr(control, "health", None))
            sinks.append(http)
            interval = options.get("preview_interval")
            if interval:
                sinks.insert(0, PreviewFeeder(http.update_preview, interval_s=float(interval)))
            print(f"mgfen-scan: live page at {http.url}", file=sys.stderr)
        elif options.get("token"):
            raise click.UsageError("--token needs --serve")
        if options.get("mqtt"):
            from edge_runtime.sinks.mqtt_sink import MqttSink

            types = tuple(t.strip() for t in (options.get("mqtt_events") or "verdict").split(",") if t.strip())
            sinks.append(MqttSink(options["mqtt"], types=types))
        sinks.insert(0, JsonlSink(out))
    except (MgfenError, click.UsageError):
        for sink in sinks:  # do not leave a bound port or a network thread behind
            sink.close()
        raise
    return sinks
