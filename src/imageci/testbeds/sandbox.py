"""The embedded default testbed: a fresh copy-on-write root per testbed.

The image's rootfs is unpacked once per digest (read-only lower layer); each
testbed gets its own overlayfs upper directory, and each command runs under
bubblewrap in new mount, pid, ipc, uts and network namespaces (only loopback,
unless the test asks for the network). A timeout kills the whole process tree
(cgroup, or the process group and bwrap's pid namespace). Memory and pids
limits apply where the host's cgroups are writable.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from imageci.build.rootfs import unpacked_rootfs
from imageci.errors import HostSetupError, TestbedError
from imageci.fs import safe_rmtree
from imageci.testbeds.base import Cost, ExecResult, ImageHandle
from imageci.testbeds.limits import LimitGroup, cgroup_mode
from imageci.testbeds.rootpath import resolve_in_root

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
    if _libc.mount(b"overlay", str(merged).encode(), b"overlay", 0, opts) != 0:
        err = ctypes.get_errno()
        raise TestbedError(f"overlayfs mount failed: {os.strerror(err)} (the sandbox testbed needs root "
                           "and a kernel with overlayfs)")


def _umount(path: Path) -> None:
    _libc.umount2(str(path).encode(), MNT_DETACH)


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise HostSetupError("bubblewrap is not installed: run scripts/host-setup.sh (apt-get install bubblewrap)")
    return path


class SandboxTestbed:
    name = "sandbox"

    def __init__(self, image: ImageHandle, lower: Path, workroot: Path, *,
                 memory_bytes: int | None = None, pids: int | None = None) -> None:
        self.image = image
        self.lower = lower
        self.workroot = workroot
        self.memory_bytes = memory_bytes
        self.pids = pids
        self.dir: Path | None = None
        self.merged: Path | None = None
        self.bwrap = bwrap_path()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()

    def capabilities(self) -> frozenset[str]:
        return sandbox_capabilities(self.image)

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> None:
        if os.geteuid() != 0:
            raise HostSetupError("the sandbox testbed needs root (it mounts overlayfs); run imageci as root")
        try:
            self.workroot.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(dir=self.workroot, prefix="sb-"))
            upper, work, merged = self.dir / "upper", self.dir / "work", self.dir / "merged"
            for d in (upper, work, merged):
                d.mkdir()
        except OSError as exc:
            raise TestbedError(f"cannot prepare the sandbox directory under {self.workroot}: {exc}") from exc
        try:
            _mount_overlay(self.lower, upper, work, merged)
        except BaseException:
            safe_rmtree(self.dir)
            self.dir = None
            raise
        self.merged = merged

    def close(self) -> None:
        """Kill whatever still runs (safe from another thread, e.g. on Ctrl-C), then clean up."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            self._kill_tree(proc, None)
        with self._close_lock:
            if self.dir is None:
                return
            if self.merged is not None:
                _umount(self.merged)
            safe_rmtree(self.dir)
            self.dir = self.merged = None

    def revert(self) -> None:
        self.close()
        self.open()

    def __enter__(self) -> SandboxTestbed:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------
    def _argv(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, network: bool, status_fd: int) -> list[str]:
        assert self.merged is not None
        cmd = [self.bwrap, "--bind", str(self.merged), "/", "--proc", "/proc", "--dev", "/dev",
               "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
               "--hostname", "imageci-sandbox", "--die-with-parent", "--new-session",
               "--json-status-fd", str(status_fd), "--chdir", cwd, "--clearenv"]
        if not network:
            cmd.append("--unshare-net")
        elif os.path.exists("/etc/resolv.conf"):
            # images ship no resolver config (hygiene): a test that needs the network borrows the host's
            cmd += ["--ro-bind", os.path.realpath("/etc/resolv.conf"), "/etc/resolv.conf"]
        full_env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                    "IMAGECI_TESTBED": self.name, **env}
        for k, v in full_env.items():
            cmd += ["--setenv", k, v]
        return [*cmd, "--", *argv]

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None, network: bool = False) -> ExecResult:
        if self.merged is None:
            raise TestbedError("sandbox is not open")
        limits = LimitGroup(memory_bytes=self.memory_bytes, pids=self.pids)
        has_limits = (self.memory_bytes or self.pids) and limits.create()
        rfd, wfd = os.pipe()
        cmd = self._argv(argv, env or {}, cwd or "/", network, wfd)
        if has_limits:
            # Join the group before exec, so every descendant is accounted and killable.
            joins = " && ".join(f"echo $$ > {f}" for f in limits.procs_files())
            cmd = ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *cmd]
        started = time.monotonic()
        timed_out = False
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(wfd,),
                                    start_new_session=True)
        finally:
            os.close(wfd)
        with self._lock:
            self._running.add(proc)
        try:
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._kill_tree(proc, limits if has_limits else None)
                out, err = proc.communicate()
            except BaseException:
                self._kill_tree(proc, limits if has_limits else None)
                proc.communicate()
                raise
            with os.fdopen(rfd, "rb") as status_pipe:
                status = status_pipe.read().decode("utf-8", "replace")
        finally:
            with self._lock:
                self._running.discard(proc)
            if has_limits:
                limits.destroy()
        duration = time.monotonic() - started
        if timed_out:
            return ExecResult(None, out, err, duration, timed_out=True)
        if '"child-pid"' not in status:
            raise TestbedError(f"sandbox failed to start (exit {proc.returncode}): "
                               f"{err.decode('utf-8', 'replace').strip()}")
        code = proc.returncode
        for line in status.splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "exit-code" in doc:
                code = int(doc["exit-code"])
        return ExecResult(code, out, err, duration)

    @staticmethod
    def _kill_tree(proc: subprocess.Popen[bytes], limits: LimitGroup | None) -> None:
        if limits is not None:
            limits.kill_all()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)

    # -- files -------------------------------------------------------------------
    def _host_path(self, path: str, follow_last: bool = True) -> Path:
        if self.merged is None:
            raise TestbedError("sandbox is not open")
        return resolve_in_root(self.merged, path, follow_last=follow_last)

    def copy_in(self, src: Path, dest: str) -> None:
        target = self._host_path(dest, follow_last=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(src, target)

    def copy_out(self, src: str, dest: Path) -> None:
        source = self._host_path(src)
        if not os.path.lexists(source):
            raise TestbedError(f"{src}: no such file in the testbed")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest, follow_symlinks=False)


def sandbox_capabilities(image: ImageHandle) -> frozenset[str]:
    caps = {"root", "revert", "network", "pristine", f"arch:{image.architecture}"}
    if cgroup_mode():
        caps.add("limits")
    return frozenset(caps)


class SandboxBackend:
    name = "sandbox"
    cost = Cost(memory_mb=256, cpus=0.5)

    def __init__(self, rootfs_cache: Path, workroot: Path, *, memory_bytes: int | None = 2 << 30,
                 pids: int | None = 4096) -> None:
        self.rootfs_cache = rootfs_cache
        self.workroot = workroot
        self.memory_bytes = memory_bytes
        self.pids = pids

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        return sandbox_capabilities(image)

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset()) -> SandboxTestbed:
        lower = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
        return SandboxTestbed(image, lower, self.workroot, memory_bytes=self.memory_bytes, pids=self.pids)
