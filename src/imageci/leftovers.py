"""What every sweeper of ``imageci gc`` shares: telling a dead owner's
resources from a live one's, and removing a directory tree whose processes and
mounts a dead run left behind. Each testbed backend sweeps its own leftovers
with these (``testbeds.registry.sweepers``); ``engine.gc`` sweeps the rest."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from imageci.fs import mounts_below, safe_rmtree
from imageci.owners import alive, token_of


def processes_mentioning(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(p.name))
    return found


class Sweep:
    """One gc pass over a home's temporary directory: what it did, and whose resources it kept."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.done: list[str] = []
        self.kept: set[str] = set()

    def dead(self, token: str | None) -> bool:
        """Resources without a token predate owner tokens: nobody live can hold them either
        (gc without --force waits for every other imageci)."""
        if token is not None and alive(self.tmp, token):
            self.kept.add(token)
            return False
        return True

    def kill_users(self, path: Path) -> None:
        for pid in processes_mentioning(str(path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.done.append(f"killed process {pid} (of a dead run, using {path.name})")

    def remove_tree(self, path: Path) -> None:
        self.kill_users(path)
        for mnt in mounts_below(path):
            self.done.append(f"unmounted {mnt}")
        safe_rmtree(path)
        self.done.append(f"removed {path}")

    def entries(self, directory: Path, prefix: str, skip: Callable[[Path], bool] = lambda _p: False) -> Iterable[
            tuple[Path, str | None]]:
        for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
            if not entry.name.startswith(prefix) or skip(entry):
                continue
            yield entry, token_of(entry.name, prefix)

    def dead_trees(self, directory: Path, prefix: str) -> None:
        """Remove every ``prefix``* tree in ``directory`` whose owner is dead."""
        for entry, token in self.entries(directory, prefix):
            if self.dead(token):
                self.remove_tree(entry)
