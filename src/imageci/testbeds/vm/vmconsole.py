"""A VM's serial console on the host: read its tail, and keep its file bounded.

qemu appends everything the guest writes to its serial port to a file. A test
may write endlessly to ``/dev/ttyS0``; while the VM runs, a guard thread frees
all but the last ``CONSOLE_KEEP`` bytes (punching a hole keeps qemu's write
offset valid), so the host's disk never fills. Reads seek to the end: a file
with a large hole is never read whole.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from imageci.libc import LIBC

CONSOLE_TAIL = 4000  # bytes of console shown with an error
CONSOLE_KEEP = 4 << 20  # bytes of a VM's console kept on disk
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def console_tail(path: Path, n: int = CONSOLE_TAIL) -> str:
    """The last ``n`` bytes of a console file, as text."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            data = fh.read(n)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def bound_file(path: Path, keep: int = CONSOLE_KEEP) -> None:
    """Free all but the last ``keep`` bytes of a file another process appends to (a VM
    writing its console): the offsets stay, the host's disk is returned."""
    try:
        st = path.stat()
    except OSError:
        return
    if st.st_blocks * 512 <= 2 * keep:
        return
    end = (st.st_size - keep) // 4096 * 4096
    fd = os.open(path, os.O_WRONLY)
    try:
        LIBC.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(end))
    finally:
        os.close(fd)


def guard_console(path: Path, running: Callable[[], bool]) -> None:
    """Keep ``path`` bounded while ``running()`` holds (a daemon thread)."""
    def guard() -> None:
        while running():
            bound_file(path)
            time.sleep(1)

    threading.Thread(target=guard, name="imageci-vm-console", daemon=True).start()
