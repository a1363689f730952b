"""`imageci gc`: remove what an imageci that crashed or was killed left behind.

Everything an imageci process makes on the host carries its owner token
(:mod:`imageci.owners`), and host-wide resources carry the home's id too. gc
removes a resource only when it belongs to this home and its owner process is
gone (its lock is free); a live process's sandboxes, disks, VMs, containers,
cgroups and temporary files are never touched, even with ``--force``:

- ``tmp/sandboxes/sb-<owner>-*``: the sandbox's processes, its overlay mount
- ``tmp/disks/<owner>-<n>``: disk slots (and the containers in their storage)
- ``tmp/vms/run-<owner>-*``: VMs (qemu processes) and their disks
- ``tmp/build-<owner>-*``: build directories (mmdebstrap processes)
- ``store/tmp/put-<owner>-*``: half-written blobs
- cgroups ``imageci-<home id>-<owner>-*``
- ``tmp/owners/<owner>.lock`` of dead owners
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from imageci.config import Settings
from imageci.errors import UsageError
from imageci.fs import mounts_below, safe_rmtree
from imageci.homelock import HomeLock
from imageci.owners import OWNERS_DIR, alive, dead_owner_locks, lock_alive, token_of
from imageci.testbeds.limits import CGROOT, group_prefix
from imageci.testbeds.lxd import remove_instances
from imageci.testbeds.podman import remove_containers
from imageci.testbeds.vm.disks import unmount_slot


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(p.name))
    return found


class _Collector:
    def __init__(self, settings: Settings) -> None:
        self.tmp = settings.tmp_dir
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
        for pid in _processes_mentioning(str(path)):
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


def collect_garbage(settings: Settings, lock: HomeLock, *, force: bool = False) -> tuple[list[str], int]:
    """Remove dead owners' leftovers; returns what was done and how many live imageci
    processes' resources were kept. ``lock`` is this process's own lock on the home."""
    if not lock.try_exclusive() and not force:
        raise UsageError(f"another imageci is running with home {settings.home}; gc would wait for it "
                         "(pass --force to remove only what dead processes left, keeping the live one's)")
    c = _Collector(settings)
    tmp = settings.tmp_dir
    for entry, token in c.entries(tmp / "sandboxes", "sb-"):
        if c.dead(token):
            c.remove_tree(entry)
    for entry, token in c.entries(tmp / "vms", "run-"):
        if c.dead(token):
            c.remove_tree(entry)
    for entry, token in c.entries(tmp, "build-"):
        if c.dead(token):
            c.remove_tree(entry)
    for entry, token in c.entries(tmp, "lxdfeed-"):
        if c.dead(token):
            c.remove_tree(entry)
    for name in remove_instances(settings.home, lambda token: c.dead(token or None)):
        c.done.append(f"removed LXD instance {name}")
    disks = tmp / "disks"
    for entry in sorted(disks.iterdir()) if disks.is_dir() else []:
        if entry.suffix == ".img":
            continue
        token = entry.name.split("-", 1)[0]
        if not c.dead(token if len(token) == 12 else None):
            continue
        for name in remove_containers(entry / "storage.conf"):
            c.done.append(f"removed container {name}")
        c.kill_users(entry)
        unmount_slot(entry, entry.with_name(f"{entry.name}.img"))
        c.done.append(f"removed disk {entry}")
    for image in sorted(disks.glob("*.img")) if disks.is_dir() else []:
        if not image.with_suffix("").exists() and c.dead(image.stem.split("-", 1)[0]):
            image.unlink(missing_ok=True)
            c.done.append(f"removed {image}")
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
