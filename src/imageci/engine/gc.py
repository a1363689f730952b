"""`imageci gc`: remove what an imageci that crashed or was killed left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from imageci.config import Settings
from imageci.errors import UsageError
from imageci.fs import mounts_below, safe_rmtree
from imageci.homelock import HomeLock
from imageci.testbeds.limits import CGROOT
from imageci.testbeds.podman import leftover_containers


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(p.name))
    return found


def collect_garbage(settings: Settings, lock: HomeLock, *, force: bool = False) -> list[str]:
    """``lock`` is this process's own lock on the home (traded for the exclusive one)."""
    if not lock.try_exclusive() and not force:
        raise UsageError(f"another imageci is running with home {settings.home}; gc would remove its testbeds "
                         "(wait for it, or pass --force)")
    done: list[str] = []
    tmp = settings.tmp_dir
    for pid in _processes_mentioning(str(tmp)):  # qemu and bwrap of dead runs
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            done.append(f"killed process {pid} (testbed of a dead run)")
    for name in leftover_containers():
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        done.append(f"removed container {name}")
    for mnt in mounts_below(settings.home):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        done.append(f"unmounted {mnt}")
    leftovers = []
    for entry in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        if entry.is_dir() and entry.name in ("sandboxes", "vms"):  # per-testbed directories live below
            leftovers += sorted(entry.iterdir())
        else:
            leftovers.append(entry)  # build directories
    for entry in leftovers:
        safe_rmtree(entry)
        done.append(f"removed {entry}")
    store_tmp = settings.store_dir / "tmp"
    if store_tmp.is_dir():
        for entry in store_tmp.iterdir():
            entry.unlink(missing_ok=True)
            done.append(f"removed {entry}")
    for parent in (CGROOT, CGROOT / "pids", CGROOT / "memory"):
        for cg in parent.glob("imageci-*") if parent.is_dir() else []:
            with contextlib.suppress(OSError):
                cg.rmdir()  # only succeeds when nothing runs in it
                done.append(f"removed cgroup {cg}")
    lock.release()
    return done
