"""Every imageci command holds a shared lock on its home while it runs; `gc`
needs the exclusive lock, so it never removes a live run's sandboxes or VMs."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class HomeLock:
    def __init__(self, home: Path) -> None:
        self.path = home / ".lock"
        self._fh: IO[str] | None = None

    def shared(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a")  # noqa: SIM115 (held for the process lifetime)
        fcntl.flock(self._fh, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def try_exclusive(self) -> bool:
        self.release()
        self._fh = open(self.path, "a")  # noqa: SIM115
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        os.set_inheritable(self._fh.fileno(), False)
        return True
