"""`imageci gc`: remove what an imageci that crashed or was killed left behind.

Everything an imageci process makes on the host carries its owner token
(:mod:`imageci.owners`), and host-wide resources carry the home's id too. gc
removes a resource only when it belongs to this home and its owner process is
gone (its lock is free); a live process's sandboxes, disks, VMs, containers,
cgroups and temporary files are never touched, even with ``--force``.

Each testbed backend sweeps its own (``testbeds.registry.sweepers``): sandboxes
(``tmp/sandboxes/sb-<owner>-*``), VMs (``tmp/vms/run-<owner>-*``), LXD instances
and run feeds, podman's containers, disk slots (``tmp/disks/<owner>-<n>``).
This module sweeps the rest:

- ``tmp/build-<owner>-*``: build directories (mmdebstrap processes)
- ``store/tmp/put-<owner>-*``: half-written blobs
- cgroups ``imageci-<home id>-<owner>-*``
- ``tmp/owners/<owner>.lock`` of dead owners
"""

from __future__ import annotations

import contextlib
import os
import signal

from imageci.config import Settings
from imageci.errors import UsageError
from imageci.homelock import HomeLock
from imageci.leftovers import Sweep
from imageci.owners import OWNERS_DIR, dead_owner_locks, lock_alive
from imageci.testbeds.limits import CGROOT, group_prefix
from imageci.testbeds.registry import sweepers


def collect_garbage(settings: Settings, lock: HomeLock, *, force: bool = False) -> tuple[list[str], int]:
    """Remove dead owners' leftovers; returns what was done and how many live imageci
    processes' resources were kept. ``lock`` is this process's own lock on the home."""
    if not lock.try_exclusive() and not force:
        raise UsageError(f"another imageci is running with home {settings.home}; gc would wait for it "
                         "(pass --force to remove only what dead processes left, keeping the live one's)")
    c = Sweep(settings.tmp_dir)
    tmp = settings.tmp_dir
    for sweep in sweepers():  # each testbed backend's own leftovers
        sweep(settings, c)
    c.dead_trees(tmp, "build-")
    store_tmp = settings.store_dir / "tmp"
    for entry, token in c.entries(store_tmp, "put-"):
        if c.dead(token):
            entry.unlink(missing_ok=True)
            c.done.append(f"removed {entry}")
    prefix = group_prefix(settings.home_id)
    for parent in (CGROOT, CGROOT / "pids", CGROOT / "memory", CGROOT / "unified"):
        for group, token in c.entries(parent, prefix):
            if not group.is_dir() or not c.dead(token):
                continue
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                group.rmdir()  # succeeds once nothing runs in it
                c.done.append(f"removed cgroup {group}")
    for dead_lock in dead_owner_locks(tmp):
        dead_lock.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        for stale in (tmp / OWNERS_DIR).glob(".*.new"):  # a process killed while taking its token
            if not lock_alive(stale):
                stale.unlink()
    lock.release()
    return c.done, len(c.kept)
