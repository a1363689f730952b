"""Aligned columns for the query commands' human output (``images``, ``results``,
``events``, ``flaky``), written straight to stdout.

A Rich table measures and wraps every cell: about 0.7 ms a row, so ``flaky``
over 20,000 transient failures took 15 s to print. These commands' rows are
single-line values, so plain columns do (about 5 µs a row), like ``ps`` or
``podman images``. Text from tests (names, reasons) is untrusted: control
characters are shown escaped, never sent to the terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence

GAP = "  "
ANSI = {"green": "32", "red": "31", "magenta": "35", "yellow": "33", "white": "37"}
# C0 and C1 control characters (and DEL) as visible escapes: a test cannot move the cursor or
# retitle the terminal through a name or a reason.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def clean(text: str) -> str:
    return text.translate(_CONTROLS)


def write_columns(headers: Sequence[str], rows: Iterable[Sequence[str]],
                  colour: Callable[[int, str], str | None] | None = None) -> None:
    """``headers`` and ``rows`` as aligned columns; ``colour(column, value)`` names a colour for a cell,
    used only when stdout is a terminal."""
    from rich.cells import cell_len  # (here: a command that prints JSON never loads it)

    table = [[clean(str(c)) for c in row] for row in rows]
    widths = [cell_len(h) for h in headers]
    for row in table:
        for i, cell in enumerate(row):
            n = cell_len(cell)
            if n > widths[i]:
                widths[i] = n
    tty = colour is not None and sys.stdout.isatty()
    last = len(headers) - 1

    def line(cells: Sequence[str], paint: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            pad = "" if i == last else " " * (widths[i] - cell_len(cell))
            name = colour(i, cell) if paint and colour is not None else None
            out.append(f"\x1b[{ANSI.get(name, '37')}m{cell}\x1b[0m{pad}" if name else cell + pad)
        return GAP.join(out).rstrip()

    write = sys.stdout.write
    write(line([h.upper() for h in headers], False) + "\n")
    for row in table:
        write(line(row, tty) + "\n")
    sys.stdout.flush()
