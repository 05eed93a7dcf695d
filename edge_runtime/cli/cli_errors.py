"""The one error boundary of every console script (mgfen-data, -train, -eval, -export, -scan, -bench,
-keygen): a problem the user can fix becomes one line `Error: <path>: <what> (<fix>)` on stderr.

Exit codes: 2 for a usage error (click's own: bad option value, missing option), 1 for a failure (a
MgfenError or an OSError raised while the command ran), 130 for Ctrl-C. `--debug`, accepted by every
command and group, re-raises instead so the traceback shows. Click exceptions pass through untouched.
Light on purpose (click and the standard library): the scanner runtime and the training CLIs share it.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import click

from edge_runtime.errors import MgfenError

F = TypeVar("F", bound=Callable[..., Any])

_DEBUG_KEY = "mgfen.debug"  # ctx.meta is shared by a group and its sub-commands

# errno -> what to do about it (the strerror says what happened)
_OS_HINTS = {
    errno.ENOENT: "check the path; a folder on it does not exist",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file path",
    errno.EACCES: "no permission; choose a location you can write to",
    errno.EPERM: "not permitted; choose a location you can write to",
    errno.EROFS: "read-only file system; choose another location",
    errno.ENOSPC: "the disk is full; free some space",
    errno.EEXIST: "it exists already; remove it or choose another path",
}


def _remember_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG_KEY] = True


def debug_option(func: F) -> F:
    """Add `--debug` (show the traceback of an error) to a click command or group."""
    return click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_remember_debug,
                        help="Show the traceback of an error instead of one line.")(func)


def debug_requested(ctx: Optional[click.Context] = None) -> bool:
    """True when --debug was given to this command or a group above it."""
    ctx = ctx if ctx is not None else click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_DEBUG_KEY))


def describe_os_error(exc: OSError) -> str:
    """`<path>: <what> (<fix>)` for an OSError (`<what> (<fix>)` when it names no path)."""
    what = (exc.strerror or str(exc)).rstrip(".")
    what = what[:1].lower() + what[1:]
    hint = _OS_HINTS.get(exc.errno) if exc.errno is not None else None
    text = f"{what} ({hint})" if hint else what
    if exc.filename is not None:
        where = os.fsdecode(exc.filename)
        if exc.filename2 is not None:
            where += f" -> {os.fsdecode(exc.filename2)}"
        return f"{where}: {text}"
    return text


def one_line(exc: BaseException) -> str:
    """The error line (without 'Error: ') a user sees for a known error."""
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


def error_boundary(func: F) -> F:
    """Decorator for a click command's function (put it below the click decorators): adds `--debug`
    and turns a MgfenError or OSError into a one-line click error (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (MgfenError, OSError) as exc:
            if debug_requested():
                raise
            raise click.ClickException(one_line(exc)) from None
        except KeyboardInterrupt:
            if debug_requested():
                raise
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None

    return debug_option(wrapper)  # type: ignore[return-value]


def first_existing(path: Path) -> Path:
    """`path` itself or its nearest ancestor that exists (the folder a write would start from)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def output_problem(path: Path, folder: bool = False) -> Optional[str]:
    """Why `path` cannot be written (a file, or a folder with `folder`) as `<path>: cannot write: <why>`,
    or None when it can. Missing parent folders are fine (the writer creates them); a file on the way, or
    no permission, is not."""
    target = Path(os.path.abspath(path))
    why = None
    if target.exists():
        if folder and not target.is_dir():
            why = "it is a file, not a folder"
        elif not folder and target.is_dir():
            why = "it is a folder, not a file"
        elif not os.access(target, os.W_OK):
            why = "no permission to write it"
    else:
        base = first_existing(target.parent)
        if not base.is_dir():
            why = f"{base} is a file, not a folder"
        elif not os.access(base, os.W_OK | os.X_OK):
            why = f"no permission to write in {base}"
    return None if why is None else f"{target}: cannot write: {why}"


class OutputPath(click.Path):
    """A click.Path for something the command will write, checked before the command runs, so a long
    scan or training never ends in a failed write; an unwritable one is a failure (exit 1), one line.
    Missing parent folders are created by the writer (write_text). `-` (stdout) passes with allow_dash."""

    def __init__(self, folder: bool = False, allow_dash: bool = False) -> None:
        super().__init__(file_okay=not folder, dir_okay=folder, allow_dash=allow_dash, path_type=Path)
        self.folder = folder

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        path = super().convert(value, param, ctx)
        if str(path) == "-" and self.allow_dash:
            return path
        problem = output_problem(Path(path), folder=self.folder)
        if problem is not None:
            option = param.opts[0] if param is not None and param.opts else "the output"
            raise click.ClickException(f"{problem} (give {option} a path in a folder you can write to)")
        return path


def write_text(path: Path, text: str) -> None:
    """Write `text` to `path`, creating missing parent folders (what OutputPath promised)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
