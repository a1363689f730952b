"""The sandbox's seccomp filter, compiled with libseccomp (through ctypes).

Reference: Docker's default profile. Docker allows a list of system calls and
denies the rest; the calls it denies by default to a container without extra
capabilities are listed in its documentation ("Significant syscalls blocked by
the default profile"). This filter denies exactly those, with ``EPERM``, and
allows everything else:

- kernel modules, kexec, reboot, swap, clocks, accounting, quotas, keyrings,
  ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring``, NUMA policy,
  ``iopl``/``ioperm``, handle-based opens, old and obsolete calls;
- ``mount``, ``umount``, the new mount API, ``pivot_root``, ``unshare``,
  ``setns``, and ``clone`` with any namespace flag (``clone3`` returns
  ``ENOSYS``, as under Docker, so libc falls back to ``clone``);
- ``mknod``/``mknodat`` of block devices (character devices stay allowed).

Docker also limits ``personality`` to a few values; that call stays allowed here.

It is loaded by bubblewrap (``--seccomp FD``) after the sandbox is set up,
for the native architecture and its compat ones (i386 and x32 on amd64, armhf
on arm64). ``needs: [privileged]`` runs without it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from imageci.errors import HostSetupError

BLOCKED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "get_kernel_syms", "get_mempolicy", "init_module", "ioperm", "iopl", "kcmp",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mbind", "mount", "move_pages",
    "name_to_handle_at", "nfsservctl", "open_by_handle_at", "perf_event_open", "pivot_root", "query_module",
    "quotactl", "quotactl_fd", "reboot", "request_key", "set_mempolicy", "setns", "settimeofday", "stime",
    "swapon", "swapoff", "sysfs", "_sysctl", "umount", "umount2", "unshare", "uselib", "userfaultfd", "ustat",
    "vm86", "vm86old", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
)
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
S_IFMT, S_IFBLK = 0o170000, 0o060000

ACT_ALLOW = 0x7FFF0000
CMP_MASKED_EQ = 7
# libseccomp's arch tokens (AUDIT_ARCH_* values)
_COMPAT = {0xC000003E: (0x40000003, 0x4000003E),  # x86_64: i386, x32
           0xC00000B7: (0x40000028,)}  # aarch64: arm


def _errno(e: int) -> int:
    return 0x00050000 | (e & 0xFFFF)


class _Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def _lib() -> ctypes.CDLL:
    try:  # by its soname (``ctypes.util.find_library`` would run ``ldconfig -p`` to find the same name)
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as exc:
        raise HostSetupError("libseccomp is not installed (apt-get install libseccomp2): the sandbox needs it for "
                             "its seccomp filter") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_Cmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def compile_filter() -> bytes:
    """The filter as a BPF program for bubblewrap's ``--seccomp``."""
    lib = _lib()
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise HostSetupError("libseccomp could not create a filter")
    try:
        for token in _COMPAT.get(lib.seccomp_arch_native(), ()):
            lib.seccomp_arch_add(ctx, token)  # an architecture the kernel lacks is simply not added

        def rule(name: str, action: int, *cmps: _Cmp) -> None:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            if nr == -1:  # unknown to this libseccomp: nothing to block
                return
            array = (_Cmp * len(cmps))(*cmps) if cmps else None
            rc = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
            if rc not in (0, -errno.EEXIST, -errno.EDOM):  # EDOM: no such call on an added arch
                raise HostSetupError(f"libseccomp refused the rule for {name}: {os.strerror(-rc)}")

        for name in BLOCKED:
            rule(name, _errno(errno.EPERM))
        rule("clone3", _errno(errno.ENOSYS))
        for flag in NAMESPACE_FLAGS:
            rule("clone", _errno(errno.EPERM), _Cmp(0, CMP_MASKED_EQ, flag, flag))
        rule("mknod", _errno(errno.EPERM), _Cmp(1, CMP_MASKED_EQ, S_IFMT, S_IFBLK))
        rule("mknodat", _errno(errno.EPERM), _Cmp(2, CMP_MASKED_EQ, S_IFMT, S_IFBLK))
        fd = os.memfd_create("imageci-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc != 0:
                raise HostSetupError(f"libseccomp could not export the filter: {os.strerror(-rc)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


_cached: bytes | None = None
_lock = threading.Lock()


def filter_bytes() -> bytes:
    global _cached
    with _lock:
        if _cached is None:
            _cached = compile_filter()
        return _cached


def filter_fd() -> int:
    """A readable fd holding the filter, positioned at its start (the caller closes it)."""
    data = filter_bytes()
    fd = os.memfd_create("imageci-seccomp", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
