"""The local, size-bounded, verified read-through cache of blobs kept elsewhere
(object storage): testbeds, builds and downloads need files on this machine.

Every entry was hashed while it was fetched (or was stored from here after it
was hashed), and is read-only. When the cache grows past its budget the least
recently used entries go, but never one that a run holds: a run *pins* a blob
with a shared ``flock`` on its file for as long as it uses it, and eviction
takes an exclusive lock without waiting or leaves the entry alone. Locks are
the kernel's, so a pin dies with its process and any process may evict.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import Callable
from pathlib import Path

from imageci.store.objects import Pin, StoreUnavailable, hex_digest

log = logging.getLogger("imageci.store")


class ReadCache:
    def __init__(self, root: Path, budget: int) -> None:
        self.root, self.budget = root, budget
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        digest = hex_digest(digest)
        return self.root / digest[:2] / digest

    def hit(self, digest: str) -> Path | None:
        """The cached file, marked as used now; None when it is not here."""
        p = self.path(digest)
        try:
            os.utime(p)
        except FileNotFoundError:
            return None
        return p

    def add(self, tmp: Path, digest: str) -> Path:
        """Rename ``tmp`` (whose bytes hash to ``digest``) in; then keep the cache within its budget."""
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, final)
        self.evict(keep=final.name)
        return final

    def drop(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(last used, size, path) of every entry, least recently used first."""
        found = []
        for sub in self.root.iterdir() if self.root.is_dir() else []:
            for f in sub.iterdir() if sub.is_dir() else []:
                with contextlib.suppress(FileNotFoundError):
                    st = f.stat()
                    found.append((st.st_mtime, st.st_size, f))
        return sorted(found)

    def evict(self, keep: str = "") -> list[str]:
        """Remove least recently used entries, none pinned and never ``keep``, until the cache fits its
        budget; the digests removed."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for _used, size, path in entries:
            if total <= self.budget:
                break
            if path.name != keep and _remove_unpinned(path):
                total -= size
                removed.append(path.name)
        if total > self.budget:
            log.info("the blob cache holds %d bytes, over its budget of %d: the rest is pinned by runs",
                     total, self.budget)
        return removed

    def pin(self, fetch: Callable[[], Path]) -> Pin:
        """The path ``fetch`` gives (fetching if need be), held against eviction until the pin is released."""
        path = Path()
        for _ in range(5):  # an eviction between the fetch and the lock: fetch again
            path = fetch()
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return Pin(path, fd)
            os.close(fd)
        raise StoreUnavailable(f"the blob cache lost {path.name} to eviction five times in a row: its budget "
                               "(IMAGECI_CACHE_BUDGET) is too small for the runs at hand")


def _remove_unpinned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # pinned by a run
            raise
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)
