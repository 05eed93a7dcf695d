"""Frames in: sources by URI with a capture thread, watchdog and reconnects (sources), the cameras behind
them (cameras) and the one-frame-ahead prefetch (prefetch)."""
