"""What a sandbox is made of besides its processes: the overlay mount of the image under a writable
layer (the mount(2) call itself, no helper binary), bubblewrap's path, and the hardening every sandbox
gets unless a test asks for ``privileged``:

- capabilities dropped to Docker's default set (``DEFAULT_CAPS``), with
  no_new_privs (setuid programs and file capabilities grant nothing);
- a seccomp filter after Docker's default profile (``testbeds/seccomp.py``);
- ``/proc/sys``, ``/proc/sysrq-trigger``, ``/proc/bus``, ``/proc/fs`` and
  ``/proc/irq`` read-only, and ``/proc/kcore``, ``/proc/keys``,
  ``/proc/timer_list``, ``/proc/sched_debug`` and friends masked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from imageci.errors import HostSetupError, TestbedError
from imageci.libc import LIBC
from imageci.testbeds.limits import LimitGroup

MNT_DETACH = 2


# Docker's default capability set
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")


PROC_READ_ONLY = ("sys", "sysrq-trigger", "bus", "fs", "irq")


PROC_MASKED = ("kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "asound", "acpi", "scsi")


def mount_overlay(lowers: Sequence[Path], upper: Path, work: Path, merged: Path) -> None:
    """Mount the overlay (``lowers`` top first) through /proc/self/fd paths: the mount options the
    test can read in /proc/mounts then name no host directory."""
    fds: list[int] = []
    try:
        for d in (*lowers, upper, work):
            fds.append(os.open(d, os.O_PATH | os.O_DIRECTORY))
        lower = ":".join(f"/proc/self/fd/{fd}" for fd in fds[:-2])
        opts = f"lowerdir={lower},upperdir=/proc/self/fd/{fds[-2]},workdir=/proc/self/fd/{fds[-1]}"
        if LIBC.mount(b"overlay", str(merged).encode(), b"overlay", 0, opts.encode()) != 0:
            err = ctypes.get_errno()
            raise TestbedError(f"overlayfs mount failed: {os.strerror(err)} (the sandbox testbed needs root "
                               "and a kernel with overlayfs)")
    except FileNotFoundError as exc:
        raise TestbedError(f"overlayfs mount failed: {exc.filename} does not exist") from exc
    finally:
        for fd in fds:
            os.close(fd)


def umount(path: Path) -> None:
    LIBC.umount2(str(path).encode(), MNT_DETACH)


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise HostSetupError("bubblewrap is not installed: run scripts/host-setup.sh (apt-get install bubblewrap)")
    return path


def hardening_args() -> list[str]:
    """bwrap options that run a command the way container runtimes do by default."""
    args = ["--cap-drop", "ALL"]
    for cap in DEFAULT_CAPS:
        args += ["--cap-add", f"CAP_{cap}"]
    for entry in PROC_READ_ONLY:
        if os.path.exists(f"/proc/{entry}"):
            args += ["--ro-bind", f"/proc/{entry}", f"/proc/{entry}"]
    for entry in PROC_MASKED:
        path = f"/proc/{entry}"
        if os.path.isdir(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        elif os.path.exists(path):
            args += ["--ro-bind", "/dev/null", path]
    return args


def kill_tree(proc: subprocess.Popen[bytes], limits: LimitGroup | None) -> None:
    """Kill everything a command started: its cgroup's processes, and its process group."""
    if limits is not None:
        limits.kill_all()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
