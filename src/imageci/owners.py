"""Who holds what: every imageci process owns a token for its lifetime.

The process holds an exclusive lock on ``$IMAGECI_HOME/tmp/owners/<token>.lock``
until it exits (a crash or ``kill -9`` releases it). Everything the process
makes on the host — sandbox directories, disk slots, VM directories, cgroups,
containers, runs in the catalog — carries the token, so cleanup can tell a
live process's resources from a dead one's without guessing from PIDs.

``home_id`` names the home on host-wide resources (cgroups, container labels),
so one home's cleanup never touches another's.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from pathlib import Path
from typing import IO

OWNERS_DIR = "owners"


def home_id(home: Path) -> str:
    """A short, stable name for a home on host-wide resources."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:10]


class Owner:
    """This process's token, held (locked) until close() or process exit."""

    def __init__(self, tmp_dir: Path) -> None:
        self.dir = tmp_dir / OWNERS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_hex(6)
        self.lock_path = self.dir / f"{self.token}.lock"
        # locked before it appears under its name: gc never sees it unlocked
        tmp = self.dir / f".{self.token}.new"
        self._fh: IO[str] | None = open(tmp, "w")  # noqa: SIM115 (held for the process lifetime)
        fcntl.flock(self._fh, fcntl.LOCK_EX)
        os.set_inheritable(self._fh.fileno(), False)
        self._fh.write(f"{os.getpid()}\n")
        self._fh.flush()
        os.rename(tmp, self.lock_path)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self.lock_path.unlink(missing_ok=True)


_mine: dict[Path, Owner] = {}


def process_owner(tmp_dir: Path) -> Owner:
    """This process's owner token for a home (made on first use, held until exit)."""
    key = tmp_dir.resolve()
    if key not in _mine:
        _mine[key] = Owner(key)
    return _mine[key]


def lock_alive(lock_path: Path) -> bool:
    """Whether the process that created ``lock_path`` still runs (it holds the lock)."""
    try:
        fh = open(lock_path)  # noqa: SIM115
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def alive(tmp_dir: Path, token: str) -> bool:
    return lock_alive(tmp_dir / OWNERS_DIR / f"{token}.lock")


def dead_owner_locks(tmp_dir: Path) -> list[Path]:
    """Lock files whose process is gone (for gc)."""
    d = tmp_dir / OWNERS_DIR
    return [p for p in sorted(d.glob("*.lock")) if not lock_alive(p)] if d.is_dir() else []


def token_of(name: str, prefix: str) -> str | None:
    """The owner token in a resource name ``<prefix><token>-<rest>``."""
    if not name.startswith(prefix):
        return None
    token = name[len(prefix):].split("-", 1)[0]
    return token if len(token) == 12 and all(c in "0123456789abcdef" for c in token) else None
