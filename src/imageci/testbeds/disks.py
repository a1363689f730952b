"""Per-testbed disk budgets: every testbed writes into a filesystem of its own size.

A slot is an ext4 filesystem on a sparse file, loop-mounted (``nosuid,nodev``,
``discard`` so that deleted data frees the host's disk again) under
``$IMAGECI_HOME/tmp/disks/<owner>-<n>``. A test that writes more than its
budget gets ENOSPC inside the testbed; the host's disk, the catalog and the
store never fill up. Slots are made on first use (a few tens of milliseconds),
emptied and reused between testbeds of the same size, and removed when the
process is done with them (or by ``imageci gc`` after a crash: the owner token
in the name tells whose they are).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from imageci.config import Settings
from imageci.errors import TestbedError
from imageci.fs import safe_rmtree
from imageci.hosttools import host_tool
from imageci.leftovers import Sweep
from imageci.owners import process_owner

NEARLY_FULL = 1 << 20  # less free space than this after a command: the disk limit was reached
# The slot's ext4 keeps a (4 MiB) journal: without one, ext4 will not hand out an inode freed in the last minute
# or so, and scans the inode tables past every one, so a testbed that writes a tree into a slot the one before
# it filled and emptied spent seconds of CPU per ten thousand files (a rootfs: 0.4 s with it, 8-12 s without).
# The file is new and sparse, so it reads as zeros: nothing to zero or trim (lazy_*, nodiscard).
JOURNAL = ["-J", "size=4"]
EXTENDED = "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0"




@dataclass
class DiskSlot:
    path: Path  # mount point
    image: Path
    size: int

    def nearly_full(self) -> bool:
        try:
            st = os.statvfs(self.path)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < NEARLY_FULL or st.f_favail == 0


def mount_slot(image: Path, mountpoint: Path, size: int) -> None:
    """A fresh ext4 of ``size`` bytes in ``image``, mounted at ``mountpoint``."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    try:
        with open(image, "wb") as fh:
            fh.truncate(size)
        subprocess.run([host_tool("mkfs.ext4", "e2fsprogs"), "-q", "-F", "-m", "0", "-i", "8192", *JOURNAL,
                        "-E", EXTENDED, str(image)],
                       check=True, capture_output=True)
        subprocess.run([host_tool("mount", "mount"), "-t", "ext4", "-o", "loop,discard,nosuid,nodev,noatime",
                        str(image), str(mountpoint)], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        image.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            mountpoint.rmdir()
        err = exc.stderr.decode("utf-8", "replace").strip()
        raise TestbedError(f"cannot make the testbed's {size >> 20} MiB disk (loop-mounted ext4 under "
                           f"{mountpoint.parent}): {err}; the per-test disk limit needs root and loop devices "
                           "(modprobe loop)") from exc
    except OSError as exc:
        raise TestbedError(f"cannot make the testbed's disk under {mountpoint.parent}: {exc}") from exc


def unmount_slot(mountpoint: Path, image: Path) -> None:
    if subprocess.run(["umount", str(mountpoint)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
    safe_rmtree(mountpoint)
    image.unlink(missing_ok=True)


class DiskPool:
    """This process's slots, by size."""

    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.token = token
        self._free: dict[int, list[DiskSlot]] = {}
        self._all: list[DiskSlot] = []
        self._n = 0
        self._lock = threading.Lock()

    def acquire(self, size: int) -> DiskSlot:
        with self._lock:
            free = self._free.get(size)
            if free:
                return free.pop()
            self._n += 1
            name = f"{self.token}-{self._n}"
        self.root.mkdir(parents=True, exist_ok=True)
        slot = DiskSlot(self.root / name, self.root / f"{name}.img", size)
        mount_slot(slot.image, slot.path, size)
        with self._lock:
            self._all.append(slot)
        return slot

    def release(self, slot: DiskSlot) -> None:
        """Empty the slot for the next testbed (or drop it when that fails)."""
        try:
            for entry in os.scandir(slot.path):
                if entry.name == "lost+found":
                    continue
                if entry.is_dir(follow_symlinks=False):
                    safe_rmtree(Path(entry.path))
                else:
                    os.unlink(entry.path)
            clean = not any(e.name != "lost+found" for e in os.scandir(slot.path))
        except OSError:
            clean = False
        with self._lock:
            if clean:
                self._free.setdefault(slot.size, []).append(slot)
                return
            self._all.remove(slot)
        unmount_slot(slot.path, slot.image)

    def close(self) -> None:
        with self._lock:
            slots, self._all, self._free = self._all, [], {}
        for slot in slots:
            unmount_slot(slot.path, slot.image)


_pools: dict[Path, DiskPool] = {}
_pools_lock = threading.Lock()


def disk_pool(tmp_dir: Path) -> DiskPool:
    """This process's pool of disk slots in a home (removed at exit)."""
    key = tmp_dir.resolve()
    with _pools_lock:
        if key not in _pools:
            _pools[key] = DiskPool(key / "disks", process_owner(key).token)
            if len(_pools) == 1:
                atexit.register(_close_all)
        return _pools[key]


def _close_all() -> None:
    for pool in list(_pools.values()):
        pool.close()


def split_at_fork(*, in_use: bool) -> None:
    """Right after a fork that hands the testbeds in use to the child (``engine.holder``): each side keeps only
    its slots — the child those in use (``in_use``), the parent the free ones — so neither unmounts the other's.
    The child removes its own with :func:`close_all` (it ends with ``os._exit``: no atexit)."""
    for pool in list(_pools.values()):
        with pool._lock:  # noqa: SLF001 (the pool's own state, split in two)
            free = [slot for slots in pool._free.values() for slot in slots]  # noqa: SLF001
            pool._all = [s for s in pool._all if (s not in free) == in_use]  # noqa: SLF001
            if in_use:
                pool._free = {}  # noqa: SLF001


def close_all() -> None:
    """Unmount and remove every slot of this process (a holder's, at its end)."""
    _close_all()


def dead_slots(disks: Path, sweep: Sweep) -> list[Path]:
    """The mounted slots under ``disks`` whose owner is dead."""
    found = []
    for entry in sorted(disks.iterdir()) if disks.is_dir() else []:
        token = entry.name.split("-", 1)[0]
        if entry.suffix != ".img" and sweep.dead(token if len(token) == 12 else None):
            found.append(entry)
    return found


def sweep(settings: Settings, sweep: Sweep) -> None:
    """``imageci gc``: a dead owner's disk slots, unmounted, and their images."""
    disks = settings.tmp_dir / "disks"
    for entry in dead_slots(disks, sweep):
        sweep.kill_users(entry)
        unmount_slot(entry, entry.with_name(f"{entry.name}.img"))
        sweep.done.append(f"removed disk {entry}")
    for image in sorted(disks.glob("*.img")) if disks.is_dir() else []:
        if not image.with_suffix("").exists() and sweep.dead(image.stem.split("-", 1)[0]):
            image.unlink(missing_ok=True)
            sweep.done.append(f"removed {image}")


def files_written(upper: Path, since: float, limit: int = 100_000) -> list[str]:
    """The regular files of a copy-on-write upper layer written since ``since`` (Unix time), as paths inside
    the testbed: what its test wrote, read on the host without entering it (at most ``limit`` entries looked at)."""
    found: list[str] = []
    stack = [(upper, "")]
    seen = 0
    while stack and seen < limit:
        directory, inside = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((Path(entry.path), f"{inside}/{entry.name}"))
                elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime >= since:
                    found.append(f"{inside}/{entry.name}")
            except OSError:
                continue
    return found
