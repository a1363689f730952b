"""Per-command resource limits with cgroups (v2 unified, or v1 memory+pids).

A limit group also gives a reliable way to kill a whole process tree: every
process forked inside stays in the group. Its event counters tell afterwards
whether a limit stopped something (an OOM kill, a refused fork), so a verdict
can name the limit. Where cgroups are not writable (not root, read-only
mount), limits are skipped and the capability says so.

Groups are named ``imageci-<home id>-<owner token>-<random>``: cleanup only
ever considers its own home's groups, and only those of dead processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from imageci.definitions.limits import Limits

CGROOT = Path("/sys/fs/cgroup")


def _writable(p: Path) -> bool:
    return p.is_dir() and os.access(p, os.W_OK)


def cgroup_mode() -> str | None:
    if (CGROOT / "cgroup.controllers").exists() and _writable(CGROOT):
        return "v2"
    if _writable(CGROOT / "pids") and _writable(CGROOT / "memory"):
        return "v1"
    return None


def group_prefix(home_id: str, token: str | None = None) -> str:
    return f"imageci-{home_id}-" + (f"{token}-" if token else "")


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class LimitGroup:
    memory_bytes: int | None = None
    pids: int | None = None
    prefix: str = "imageci-"
    name: str = ""
    dirs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.prefix}{uuid.uuid4().hex[:8]}"

    def hits(self) -> dict[str, int]:
        """How often each limit struck so far: ``{"memory": OOM kills, "pids": refused forks}``."""
        found = {"memory": 0, "pids": 0}
        for d in self.dirs:
            if (d / "memory.events").exists():  # v2
                found["memory"] += _counter(d / "memory.events", "oom_kill")
            elif (d / "memory.oom_control").exists():  # v1
                found["memory"] += _counter(d / "memory.oom_control", "oom_kill")
            if (d / "pids.events").exists():
                found["pids"] += _counter(d / "pids.events", "max")
        return found

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


def process_groups(pid: int) -> list[Path]:
    """The memory and pids cgroup directories of a process (e.g. a container's init)."""
    dirs: list[Path] = []
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "" and (CGROOT / "cgroup.controllers").exists():
            dirs.append(CGROOT / rel)
        for name in ("memory", "pids"):
            if name in controllers.split(","):
                dirs.append(CGROOT / name / rel)
    return [d for d in dirs if d.is_dir()]


def limit_notes(limits: Limits, *, oom_kills: int = 0, refused_forks: int = 0, disk_full: bool = False,
                output_stopped: bool = False, memory_is: str = "") -> list[str]:
    """Sentences naming each limit that struck, for the verdict's reason (every backend words them alike).
    ``memory_is`` says what the memory limit is where it is not a cgroup's (a VM's RAM)."""
    notes = []
    if oom_kills:
        what = memory_is or limits.describe("memory")
        notes.append(f"memory limit ({what}) reached: the kernel killed {oom_kills} process(es) (OOM); "
                     "declare more with `memory:`")
    if refused_forks:
        notes.append(f"pids limit ({limits.describe('pids')}) reached: fork() was refused {refused_forks} time(s); "
                     "declare more with `pids:`")
    if disk_full:
        notes.append(f"disk limit ({limits.describe('disk')}) reached: the test's writes filled its disk (ENOSPC); "
                     "declare more with `disk:`")
    if output_stopped:
        notes.append(f"output limit ({limits.describe('output')}) reached: the command wrote more and was stopped; "
                     "declare more with `output:`")
    return notes
