"""Filesystem helpers shared by builders and testbeds: safe removal of trees
that may have something mounted below them."""

from __future__ import annotations

import os
import shutil
import subprocess
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


def unmount_all(path: Path) -> None:
    for mnt in mounts_below(path):
        subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)


def safe_rmtree(path: Path) -> None:
    """Remove ``path`` without ever crossing into a mounted filesystem."""
    if not os.path.lexists(path):
        return
    unmount_all(path)
    if not mounts_below(path):
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
