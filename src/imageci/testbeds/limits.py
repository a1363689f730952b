"""Per-testbed resource limits with cgroups (v2 unified, or v1 memory+pids).

A limit group also gives a reliable way to kill a whole process tree: every
process forked inside stays in the group. Where cgroups are not writable (not
root, read-only mount), limits are skipped and the capability says so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

CGROOT = Path("/sys/fs/cgroup")


def _writable(p: Path) -> bool:
    return p.is_dir() and os.access(p, os.W_OK)


def cgroup_mode() -> str | None:
    if (CGROOT / "cgroup.controllers").exists() and _writable(CGROOT):
        return "v2"
    if _writable(CGROOT / "pids") and _writable(CGROOT / "memory"):
        return "v1"
    return None


@dataclass
class LimitGroup:
    memory_bytes: int | None = None
    pids: int | None = None
    name: str = field(default_factory=lambda: f"imageci-{uuid.uuid4().hex[:12]}")
    dirs: list[Path] = field(default_factory=list)

    def create(self) -> bool:
        mode = cgroup_mode()
        try:
            if mode == "v2":
                d = CGROOT / self.name
                d.mkdir()
                self.dirs = [d]
                if self.memory_bytes:
                    (d / "memory.max").write_text(str(self.memory_bytes))
                if self.pids:
                    (d / "pids.max").write_text(str(self.pids))
            elif mode == "v1":
                pd, md = CGROOT / "pids" / self.name, CGROOT / "memory" / self.name
                pd.mkdir()
                md.mkdir()
                self.dirs = [pd, md]
                if self.pids:
                    (pd / "pids.max").write_text(str(self.pids))
                if self.memory_bytes:
                    (md / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
            else:
                return False
        except OSError:
            self.destroy()
            return False
        return True

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids_inside(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                found |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
        return found

    def kill_all(self) -> None:
        for i in range(500):
            pids = self.pids_inside()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.001 if i < 100 else 0.01)

    def destroy(self) -> None:
        self.kill_all()
        for d in self.dirs:
            for i in range(300):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy while the last processes finish exiting
                    time.sleep(0.001 if i < 100 else 0.01)
        self.dirs = []
