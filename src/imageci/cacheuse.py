"""Marking what a cache holds as used: when last (so that trimming removes the least recently used
entry first) and right now (so that trimming never removes what a run is reading).

A home's own caches are trimmed only while no other imageci uses the home (gc holds its exclusive
lock). The build cache is shared by every home of the host: a builder holds a shared lock on its
``.in-use`` file while it reads or writes an entry, and trimming takes it exclusively or skips it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

IN_USE = ".in-use"


def touch(path: Path) -> None:
    """Record that ``path`` (an entry, or its marker) was used now."""
    with contextlib.suppress(OSError):
        os.utime(path, None)


@contextlib.contextmanager
def using(cache_dir: Path) -> Iterator[None]:
    """Hold the shared cache ``cache_dir`` in use for the duration (a shared lock)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / IN_USE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_SH)
        yield


@contextlib.contextmanager
def alone(cache_dir: Path) -> Iterator[bool]:
    """Whether nobody uses the shared cache ``cache_dir`` now; while True, nobody starts to."""
    if not cache_dir.is_dir():
        yield False
        return
    with open(cache_dir / IN_USE, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
