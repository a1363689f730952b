"""A file copied into a running container from the host, through the root of its first process
(``/proc/PID/root``): no container tool is started for it (a ``podman cp`` is a podman process,
a tenth of a second of every test).

The kernel resolves every name inside the container's root (``openat2`` with ``RESOLVE_IN_ROOT``):
a link, even one a process in there swaps meanwhile, is followed as the container would follow it and
never leads out of it; the file itself is made anew (``O_EXCL``, never through a link). The process is
held by a pidfd, so a container that ended (its process id reused by another) is never written into.
What is made belongs to the container's root: the ids its user namespace maps root to, if any."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import stat
from pathlib import Path

from imageci.libc import LIBC

SYS_OPENAT2 = 437  # the same on every architecture (a system call added after the tables were unified)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _openat2(root: int, path: str, flags: int) -> int:
    """``path`` opened below the directory ``root`` as if ``root`` were ``/``."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = int(LIBC.syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(root), ctypes.c_char_p(os.fsencode(path)),
                          ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def _root_id(pid: int, kind: str) -> int:
    """The host's id for the container's root (``kind`` "uid" or "gid"): 0 where it has no user namespace."""
    for line in Path(f"/proc/{pid}/{kind}_map").read_text().splitlines():
        inside, outside, count = (int(x) for x in line.split())
        if inside <= 0 < inside + count:
            return outside - inside
    raise OSError(errno.EPERM, f"the container's root has no {kind} on this host")


def copy_file_into(pidfd: int, pid: int, src: Path, dest: str) -> None:
    """Copy the regular file ``src`` to ``dest`` inside the root of process ``pid`` (held by ``pidfd``),
    its mode and times kept, the missing parents made (0755); a file at ``dest`` is replaced. OSError
    where that cannot be done (the process ended, no ``openat2``, a directory at ``dest``)."""
    names = [p for p in dest.split("/") if p and p != "."]
    if not names or ".." in names:
        raise OSError(errno.EINVAL, "not a file's path", dest)
    root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        signal.pidfd_send_signal(pidfd, 0)  # still the container's process: the root opened is its root
        uid, gid = _root_id(pid, "uid"), _root_id(pid, "gid")
        parent = _directory(root, names[:-1], uid, gid)
        try:
            _write(parent, names[-1], src, uid, gid)
        finally:
            os.close(parent)
    finally:
        os.close(root)


def _directory(root: int, names: list[str], uid: int, gid: int) -> int:
    """The directory ``names`` below ``root`` (an ``O_PATH`` descriptor), made where missing."""
    for depth in range(len(names)):
        above = _openat2(root, "/".join(names[:depth]) or ".", os.O_PATH | os.O_DIRECTORY)
        try:
            os.mkdir(names[depth], 0o755, dir_fd=above)
            if uid or gid:
                os.chown(names[depth], uid, gid, dir_fd=above, follow_symlinks=False)
        except FileExistsError:
            pass
        finally:
            os.close(above)
    return _openat2(root, "/".join(names) or ".", os.O_PATH | os.O_DIRECTORY)


def _write(parent: int, name: str, src: Path, uid: int, gid: int) -> None:
    st = os.stat(src)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(src))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=parent)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    try:
        with open(src, "rb") as fh, open(fd, "wb", closefd=False) as out:
            shutil.copyfileobj(fh, out)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, stat.S_IMODE(st.st_mode))
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)
