"""The dashboard's templates (Jinja2, autoescaped) and the filters they use:
times as ``<time>`` elements (UTC in the page and on hover; the browser's
script shows them in the reader's locale), durations, sizes, logs with their
colours."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from imageci.web import ansi

VERDICT_MARK = {"pass": "✓", "fail": "✗", "error": "!", "flaky": "~", "skip": "–", None: "·"}


def _when(value: datetime | str | None) -> Markup:
    if value is None or value == "":
        return Markup("–")
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    utc = at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    iso = at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Markup(f'<time datetime="{iso}" title="{utc}">{utc}</time>')  # noqa: S704 - formatted from a datetime


def _ago(value: datetime | str | None) -> str:
    if value is None or value == "":
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    s = max(0, int((datetime.now(UTC) - at).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f} s" if value < 60 else f"{int(value // 60)} min {value % 60:.0f} s"


def _size(value: int | None) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _url(path: str, **query: Any) -> str:
    """``path`` with the query parameters that are not None, each quoted."""
    given = {k: v for k, v in query.items() if v is not None and v != ""}
    return f"{path}?{urlencode(given)}" if given else path


def _ref(label: str) -> str:
    return quote(label, safe="@")


def environment() -> Environment:
    env = Environment(loader=PackageLoader("imageci.web", "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(when=_when, ago=_ago, seconds=_seconds, size=_size, ansi=ansi.to_html, ref=_ref,
                       urlquote=lambda s: quote(str(s), safe=""),
                       mark=lambda v: VERDICT_MARK.get(v, "?"), escape=escape)
    env.globals.update(url=_url)
    return env
