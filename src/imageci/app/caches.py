"""The caches imageci keeps, each within a size budget (``IMAGECI_CACHE_BUDGET``, per cache).

Every cache is made again from the store (or the mirror) when an entry is missing, so trimming one
loses time, never evidence. ``imageci doctor`` reports each cache's size against its budget;
``imageci gc`` and a retention pass trim a cache over budget, the least recently used entries first
(a use touches the entry, see :mod:`cacheuse`), and never while a run may use it: a home's own caches
only while gc holds the home alone, the shared build cache only while no build holds it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from imageci import cacheuse
from imageci.app.session import Session
from imageci.config import Settings
from imageci.fs import safe_rmtree


@dataclass(frozen=True)
class Entry:
    tree: Path  # what the entry holds
    marker: Path | None  # its completion marker (removed first, so nobody starts to use a half-gone entry)
    used: float  # last use, seconds since the epoch


class CacheUsage(BaseModel):
    name: str
    path: str
    entries: int
    size: int  # bytes
    budget: int  # bytes

    @property
    def over(self) -> bool:
        return self.size > self.budget


def _size(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def _marked(root: Path) -> Iterator[Entry]:
    """Entries made complete by a ``KEY.complete`` marker beside the ``KEY`` tree (unpacked images, VM disks)."""
    for marker in root.glob("*.complete") if root.is_dir() else ():
        tree = marker.with_name(marker.name.removesuffix(".complete"))
        try:
            yield Entry(tree, marker, marker.stat().st_mtime)
        except OSError:
            continue


def _directories(root: Path) -> Iterator[Entry]:
    """Entries that are directories (being made: a dot name; ``layers`` is a cache of its own)."""
    for tree in root.iterdir() if root.is_dir() else ():
        if tree.is_dir() and not tree.is_symlink() and not tree.name.startswith(".") and tree.name != "layers":
            try:
                yield Entry(tree, None, tree.stat().st_mtime)
            except OSError:
                continue


def home_caches(settings: Settings) -> list[tuple[str, Path, Callable[[Path], Iterator[Entry]]]]:
    """This home's caches: (name, directory, its entries)."""
    deps = settings.home / "cache" / "test-deps"
    return [("unpacked images", settings.rootfs_cache, _marked), ("VM disks", settings.home / "vm", _marked),
            ("VM templates", settings.home / "vm-templates", _marked),
            ("test dependencies", deps, _directories), ("test dependency layers", deps / "layers", _directories),
            ("suite snapshots", settings.home / "suites", _directories),
            ("consumer snapshots", settings.home / "consumers" / "snapshots", _directories),
            ("consumer repositories", settings.home / "consumers" / "git", _directories)]


def _all(settings: Settings) -> list[tuple[str, Path, Callable[[Path], Iterator[Entry]]]]:
    shared = [("builds (shared)", settings.build_cache, _directories)] if settings.build_cache else []
    return [*home_caches(settings), *shared]


def usage(settings: Settings) -> list[CacheUsage]:
    """Each cache's size and entries, with its budget."""
    out = []
    for name, root, entries in _all(settings):
        found = list(entries(root))
        out.append(CacheUsage(name=name, path=str(root), entries=len(found),
                              size=sum(_size(e.tree) for e in found), budget=settings.cache_budget))
    return out


def _trim_one(name: str, root: Path, entries: Callable[[Path], Iterator[Entry]], budget: int) -> list[str]:
    sized = sorted(((e, _size(e.tree)) for e in entries(root)), key=lambda pair: pair[0].used)
    total = sum(size for _e, size in sized)
    removed = []
    for entry, size in sized:
        if total <= budget:
            break
        if entry.marker is not None:
            entry.marker.unlink(missing_ok=True)
        safe_rmtree(entry.tree)
        for suffix in (".manifest", ".lock", ".stamps", ".init"):  # what is kept beside a tree (.init: its init)
            entry.tree.with_name(entry.tree.name + suffix).unlink(missing_ok=True)
        total -= size
        removed.append(f"trimmed {name}: removed {entry.tree.name} ({size / 1e6:.1f} MB, least recently used)")
    return removed


def trim(settings: Settings, *, home_alone: bool) -> list[str]:
    """Bring every cache within its budget, least recently used entries first. ``home_alone``: no other
    imageci uses this home (the caller holds its exclusive lock); else only the shared build cache, if
    no build holds it, is trimmed, and the home's caches over budget are named as left for later."""
    done: list[str] = []
    for name, root, entries in home_caches(settings):
        if home_alone:
            done += _trim_one(name, root, entries, settings.cache_budget)
        elif sum(_size(e.tree) for e in entries(root)) > settings.cache_budget:
            done.append(f"{name} is over its budget: not trimmed while another imageci uses this home")
    if settings.build_cache:
        with cacheuse.alone(settings.build_cache) as alone:
            if alone:
                done += _trim_one("builds (shared)", settings.build_cache, _directories, settings.cache_budget)
    return done


def trim_home(session: Session) -> list[str]:
    """:func:`trim`, alone in the home if no other imageci uses it now; the session's shared lock is held
    again afterwards (what every imageci process holds on its home)."""
    alone = session.lock.try_exclusive()
    try:
        return trim(session.settings, home_alone=alone)
    finally:
        session.lock.shared()
