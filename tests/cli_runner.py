"""A click CliRunner that keeps stderr apart from stdout on every click the project supports: click < 8.2
mixes them unless mix_stderr=False, and click 8.2 removed that argument (stderr is always apart)."""

from __future__ import annotations

import inspect

from click.testing import CliRunner


def stderr_runner() -> CliRunner:
    """A CliRunner whose results have `.stderr` (and `.stdout` without it) on click 8.1 and 8.2+."""
    split = {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    return CliRunner(**split)
