"""Durations written by people: ``90s``, ``30m``, ``12h``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

_RE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """Raises ValueError with a hint for anything else."""
    m = _RE.fullmatch(text.strip())
    if not m or len(m.group(1)) > 9:
        raise ValueError(f"bad duration {text[:40]!r}: use e.g. 90m, 12h, 7d")
    value = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if value > LONGEST:
        raise ValueError(f"duration {text!r} is longer than 100 years")
    return value


LONGEST = timedelta(days=36525)


def duration_arg(text: str) -> timedelta:
    """A duration a user passed (an option, a query parameter): a bad one is a usage error (exit 2,
    HTTP 400)."""
    from imageci.errors import UsageError

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
