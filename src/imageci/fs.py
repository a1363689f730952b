"""Filesystem helpers shared by builders, testbeds and the BOM: safe removal of
trees that may have something mounted below them, and walking a tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    root = os.path.realpath(path)
    found = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                mnt = line.split()[4].replace("\\040", " ")
                if mnt == root or mnt.startswith(root.rstrip("/") + "/"):
                    found.append(mnt)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def safe_rmtree(path: Path) -> None:
    """Remove ``path`` without ever crossing into a mounted filesystem."""
    if not os.path.lexists(path):
        return
    mounted = mounts_below(path)  # (read once when nothing is mounted there: a sandbox is removed per test)
    for mnt in mounted:
        subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
    if not mounted or not mounts_below(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    # Something could not be unmounted: --one-file-system refuses to descend into it.
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False, capture_output=True)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace a regular file in one step (readers never see half a report), making its directory if
    need be. Anything else (/dev/stdout, a FIFO, /dev/null) is written to in place: renaming over it
    would replace the device node itself."""
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, "wb") as fh:
            fh.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # this thread's own
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def walk(root: Path) -> Iterator[tuple[str, int, str, os.stat_result]]:
    """Every entry below ``root`` (links not followed): its path relative to ``root``, a descriptor of its
    directory (open while the entry is handled: open the entry relative to it), its name there, and its lstat.

    Each directory is opened once and its entries are stat'ed relative to it (``fstatat``), not by a path
    from ``/`` each: a rootfs of 9,500 entries in 33 instead of 40 ms. Two descriptors are open at a time."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        stack = [""]
        while stack:
            rel = stack.pop()
            fd = os.open(rel or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        sub = f"{rel}/{entry.name}" if rel else entry.name
                        st = entry.stat(follow_symlinks=False)  # (relative to fd)
                        yield sub, fd, entry.name, st
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(sub)
            finally:
                os.close(fd)
    finally:
        os.close(top)
