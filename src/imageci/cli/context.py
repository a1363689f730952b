"""What every command shares: the consoles, warnings from the layers below, and
turning errors into the documented exit codes."""

from __future__ import annotations

import functools
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from imageci.errors import ImageciError
from imageci.exitcodes import ExitCode

# Wide enough for tables when output goes to a file or a CI log.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

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
