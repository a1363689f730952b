"""Terminal colours in logs, as HTML: SGR colour and bold codes become spans with
classes (``fg-1`` … ``fg-15``, ``b``); every other escape sequence is dropped;
the text itself is escaped."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

ESCAPES = re.compile(r"\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _style(params: str, fg: int | None, bold: bool) -> tuple[int | None, bool]:
    codes = [int(c) if c.isdigit() else 0 for c in params.split(";")] if params else [0]
    for code in codes:
        if code == 0:
            fg, bold = None, False
        elif code == 1:
            bold = True
        elif code == 22:
            bold = False
        elif 30 <= code <= 37:
            fg = code - 30
        elif 90 <= code <= 97:
            fg = code - 90 + 8
        elif code == 39:
            fg = None
    return fg, bold


def _span(text: str, fg: int | None, bold: bool) -> str:
    body = str(escape(CONTROLS.sub("", text)))
    classes = " ".join(c for c in (f"fg-{fg}" if fg is not None else "", "b" if bold else "") if c)
    return f'<span class="{classes}">{body}</span>' if classes and body else body


def to_html(text: str) -> Markup:
    """``text`` with its SGR colours as spans and nothing else of the terminal's."""
    out, fg, bold, at = [], None, False, 0
    for m in ESCAPES.finditer(text):
        out.append(_span(text[at:m.start()], fg, bold))
        if m.group(2) == "m":
            fg, bold = _style(m.group(1), fg, bold)
        at = m.end()
    out.append(_span(text[at:], fg, bold))
    return Markup("".join(out))  # noqa: S704 - every piece of text went through escape()


def plain(text: str) -> str:
    """``text`` without any escape sequence."""
    return CONTROLS.sub("", ESCAPES.sub("", text))
