"""Events out: JSON Lines (sinks_jsonl), the HTTP live page with Server-Sent Events and the annotated preview
(http_sink, http_handler, sse_fanout, preview), MQTT (mqtt_sink), the SQLite audit log of verdicts
(audit_log), and which of them a scan writes to (sink_factory)."""
