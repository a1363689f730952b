"""What every command shares: the consoles, warnings from the layers below, and
turning errors into the documented exit codes."""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import typer
from pydantic import ValidationError

from imageci.errors import ImageciError
from imageci.exitcodes import ExitCode

if TYPE_CHECKING:
    from rich.console import Console


class _OnFirstUse:
    """A rich Console made when a command first prints through it: one that prints JSON or columns never
    loads rich's console (a fifth of a query command's start)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._made: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._made is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            # wide enough for tables when output goes to a file or a CI log
            self._made = Console(stderr=self._stderr, width=None if stream.isatty() else 200)
        return getattr(self._made, name)


console = cast("Console", _OnFirstUse(stderr=False))
err_console = cast("Console", _OnFirstUse(stderr=True))


def escape(text: str) -> str:
    """``text`` with rich markup shown as written."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)

F = TypeVar("F", bound=Callable[..., Any])


COLOURS = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "flaky": "yellow"}


def print_json(doc: object) -> None:
    """Machine-readable output: plain JSON on stdout, UTF-8, no styling. Pydantic models (the app
    layer's rows), lists and dicts are serialized by pydantic-core: fast for large outputs."""
    from pydantic_core import to_json

    sys.stdout.flush()
    sys.stdout.buffer.write(to_json(doc, indent=2) + b"\n")
    sys.stdout.buffer.flush()


class _ConsoleLog(logging.Handler):
    """Warnings from the layers below (e.g. a changed cache rebuilt) shown to the user."""

    def emit(self, record: logging.LogRecord) -> None:
        err_console.print(f"[yellow]warning[/]: {escape(record.getMessage())}", highlight=False, soft_wrap=True)


def show_warnings() -> None:
    logger = logging.getLogger("imageci")
    if not any(isinstance(h, _ConsoleLog) for h in logger.handlers):
        logger.addHandler(_ConsoleLog(logging.WARNING))
        logger.propagate = False


def _sigterm(_signo: int, _frame: object) -> None:
    raise KeyboardInterrupt


def handle_errors(fn: F) -> F:
    """Map ImageciError → its exit code, an invalid request → 2, Ctrl-C/SIGTERM → 130, with a clear message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        signal.signal(signal.SIGTERM, _sigterm)
        try:
            return fn(*args, **kwargs)
        except ImageciError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except ValidationError as exc:  # an operation's request built from the arguments
            problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'] if x != 'body') or 'input'}: {e['msg']}"
                                 for e in exc.errors()[:10])
            err_console.print(f"[bold red]error:[/] {escape(problems)}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(int(ExitCode.USAGE)) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted: temporary state cleaned up[/]")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper  # type: ignore[return-value]
