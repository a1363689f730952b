"""Sizes as people write them (``4G``, ``512M``, ``2GiB``) and as they read them: for limits, settings and
reports alike."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: str | int) -> int:
    """``4G``, ``512M``, ``2GiB``, ``1048576`` → bytes (powers of 1024)."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"must be positive (got {value})")
        return value
    m = _SIZE.match(value)
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"not a size: {value!r} (e.g. 512M, 4G)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def human_size(n: int) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} bytes"
