"""Durations written by people: ``90s``, ``30m``, ``12h``, ``7d``."""

from __future__ import annotations

import re
from datetime import timedelta

_RE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """Raises ValueError with a hint for anything else."""
    m = _RE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"bad duration {text!r}: use e.g. 90m, 12h, 7d")
    return timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
