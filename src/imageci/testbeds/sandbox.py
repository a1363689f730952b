"""The embedded default testbed: a fresh copy-on-write root per testbed.

The image's rootfs is unpacked once per digest (read-only lower layer); each testbed gets its own overlayfs
upper directory on a disk slot of its own size (ENOSPC past the budget, never a full host disk). The overlay
is mounted with ``/proc/self/fd`` paths, so the test's ``/proc/mounts`` shows no host path.

Each command runs under bubblewrap in new mount, pid, ipc, uts, cgroup and
network namespaces (only loopback, unless the test asks for the network),
hardened the way container runtimes run untrusted code by default
(``testbeds/hardening.py``, ``testbeds/seccomp.py``), with memory and pids
limits per command (cgroups) whose OOM and fork-refusal counters name the limit
in the verdict when one struck.

A testbed made for ``archive`` (DEP-8 tests) keeps one private network
namespace for all its commands, where the archive proxy listens
(``testbeds/archive.py``): the image's apt archive is reachable, nothing else.

``needs: [privileged]`` keeps every capability, loads no seccomp filter and leaves ``/proc`` writable (its
sysctl writes reach the host kernel); the namespaces, limits and disk budget still apply. A timeout or too
much output kills the whole process tree (cgroup, or the process group and bwrap's pid namespace).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from imageci.capabilities import ARCHIVE, LIMITS, NETWORK, PRISTINE, PRIVILEGED, REVERT, ROOT, access, arch
from imageci.config import Settings
from imageci.definitions.limits import DEFAULTS, Limits
from imageci.errors import HostSetupError, TestbedError
from imageci.formats.rootfs import unpacked_rootfs
from imageci.fs import safe_rmtree
from imageci.hostarch import why_cannot_run
from imageci.leftovers import Sweep
from imageci.owners import home_id, process_owner
from imageci.rootpath import resolve_in_root
from imageci.testbeds.archive import APT_CONF, APT_CONF_TEXT, archive_hosts, new_namespace, proxy
from imageci.testbeds.base import Backend, Cost, ExecResult, ImageHandle, Testbed
from imageci.testbeds.bwrapcmd import HOSTNAME, busy_retried, bwrap_argv, exit_code, take_terminal
from imageci.testbeds.disks import DiskSlot, disk_pool, files_written
from imageci.testbeds.hardening import (
    bwrap_path,
    kill_tree,
    mount_overlay,
    umount,
)
from imageci.testbeds.limits import LimitGroup, cgroup_mode, group_prefix, limit_notes
from imageci.testbeds.names import HOSTNAME_PATH, HOSTS_PATH, hosts_text
from imageci.testbeds.output import pump, stream_keep
from imageci.testbeds.seccomp import filter_fd


class SandboxTestbed(Testbed):
    name = "sandbox"

    def __init__(self, image: ImageHandle, lower: Path, workroot: Path, *, limits: Limits = DEFAULTS,
                 privileged: bool = False, archive: frozenset[tuple[str, str, int]] | None = None,
                 network: bool = False) -> None:
        """``workroot`` is ``$IMAGECI_HOME/tmp/sandboxes`` (its parent holds the owner locks and disk slots);
        ``archive``: the apt archives the testbed's commands may reach (None: no archive access);
        ``network``: its commands reach the host's network (else loopback only)."""
        self.image = image
        self.lower = lower
        self.workroot = workroot
        self.limits = limits.over(DEFAULTS)
        self.privileged = privileged
        self.tmp = workroot.parent
        self.cgroup_prefix = ""  # imageci-<home id>-<owner>-: set by open()
        self.dir: Path | None = None
        self.merged: Path | None = None
        self.slot: DiskSlot | None = None
        self.bwrap = bwrap_path()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._notes: list[str] = []
        self.archive = archive
        self.network = network
        self._netns: int | None = None
        self._listener: socket.socket | None = None
        self._names: list[str] = []

    def capabilities(self) -> frozenset[str]:
        """The backend's words; ``network`` and ``archive`` only when this testbed was made with them."""
        caps = sandbox_capabilities(self.image)
        return caps - ({ARCHIVE} if self.archive is None else set()) - (set() if self.network else {NETWORK})

    def limit_notes(self) -> list[str]:
        with self._lock:
            notes, self._notes = self._notes, []
        return notes

    # -- lifecycle ---------------------------------------------------------------
    def open(self) -> None:
        if os.geteuid() != 0:
            raise HostSetupError("the sandbox testbed needs root (it mounts overlayfs); run imageci as root")
        try:
            token = process_owner(self.tmp).token
            self.cgroup_prefix = group_prefix(home_id(self.tmp.parent), token)
            self.workroot.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(dir=self.workroot, prefix=f"sb-{token}-"))
            (self.dir / "merged").mkdir()
        except OSError as exc:
            raise TestbedError(f"cannot prepare the sandbox directory under {self.workroot}: {exc}") from exc
        try:
            assert self.limits.disk is not None
            self.slot = disk_pool(self.tmp).acquire(self.limits.disk)
            self._mount_layers(None)
            self._names = self._write_names()
            if self.archive is not None:
                self._netns, self._listener = new_namespace()
                proxy().serve(self._listener, self.archive)
                self._write_apt_conf()
        except BaseException:
            self._release()
            raise

    def _mount_layers(self, layer: Path | None) -> None:
        assert self.slot is not None and self.dir is not None
        upper, work = self.slot.path / "upper", self.slot.path / "work"
        upper.mkdir()
        work.mkdir()
        mount_overlay([layer, self.lower] if layer is not None else [self.lower], upper, work, self.dir / "merged")
        self.merged = self.dir / "merged"

    def _write_names(self) -> list[str]:
        """This testbed's ``/etc/hosts`` and ``/etc/hostname`` (see :mod:`names`), on its disk slot beside the
        layers (a test that writes to them writes within its disk limit), as bwrap arguments that bind them over
        the image's (which stay as built); none where the image has a link or a directory there."""
        assert self.slot is not None
        args: list[str] = []
        for path, text in ((HOSTS_PATH, None), (HOSTNAME_PATH, f"{HOSTNAME}\n")):
            inside = self._host_path(path, follow_last=False)
            if inside.is_symlink() or inside.exists() and not inside.is_file() or not inside.parent.is_dir():
                continue
            if text is None:
                image = inside.read_text(errors="replace") if inside.is_file() else ""
                text = hosts_text(HOSTNAME, image)
            mine = self.slot.path / path.rsplit("/", 1)[1]
            mine.write_text(text)
            args += ["--bind", str(mine), path]
        return args

    def _write_apt_conf(self) -> None:
        conf = self._host_path(APT_CONF, follow_last=False)
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(APT_CONF_TEXT)

    # -- layers --------------------------------------------------------------------
    supports_layers = True

    def reset(self, layer: Path | None = None) -> None:
        """A new, empty writable layer over the image, with ``layer`` (a saved install) under it."""
        if self.merged is None or self.slot is None:
            raise TestbedError("sandbox is not open")
        with self._lock:
            if self._running:
                raise TestbedError("cannot reset a sandbox while commands run in it")
        umount(self.merged)
        self.merged = None
        safe_rmtree(self.slot.path / "upper")
        safe_rmtree(self.slot.path / "work")
        self._mount_layers(layer)
        if self.archive is not None:
            self._write_apt_conf()

    def export_layer(self, dest: Path, exclude: Sequence[str] = ()) -> None:
        """Copy the writable layer — whiteouts, opaque directories, owners and modes kept — to ``dest``."""
        if self.slot is None:
            raise TestbedError("sandbox is not open")
        tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            r = subprocess.run(["cp", "-a", "--", f"{self.slot.path / 'upper'}/.", str(tmp)], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise TestbedError(f"cannot save the sandbox's layer: {r.stderr.strip()}")
            for rel in (APT_CONF, HOSTS_PATH, HOSTNAME_PATH, *exclude):  # ours, or mount points bwrap made
                gone = tmp / rel.lstrip("/")
                if gone.is_dir() and not gone.is_symlink():
                    safe_rmtree(gone)
                else:
                    gone.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another worker saved the same layer first
                os.rename(tmp, dest)
        finally:
            if tmp.exists():
                safe_rmtree(tmp)

    def _release(self) -> None:
        if self._listener is not None:
            proxy().stop(self._listener)
            self._listener = None
        if self._netns is not None:
            os.close(self._netns)
            self._netns = None
        if self.dir is not None:
            if self.merged is not None:
                umount(self.merged)
            safe_rmtree(self.dir)
        if self.slot is not None:
            disk_pool(self.tmp).release(self.slot)
        self.dir = self.merged = self.slot = None

    def close(self) -> None:
        """Kill whatever still runs (safe from another thread, e.g. on Ctrl-C), then clean up."""
        with self._lock:
            running = list(self._running)
        for proc in running:
            kill_tree(proc, None)
        with self._close_lock:
            self._release()

    def revert(self) -> None:
        self.close()
        self.open()

    def __enter__(self) -> SandboxTestbed:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ----------------------------------------------------------------
    def _argv(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, status_fd: int,
              seccomp_fd: int | None) -> list[str]:
        assert self.merged is not None
        return bwrap_argv(self.bwrap, self.merged, argv, {"IMAGECI_TESTBED": self.name, **env}, cwd, status_fd,
                          seccomp_fd, names=self._names, privileged=self.privileged,
                          network=self.network, own_netns=self._netns is not None)

    def _start(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, fds: tuple[int, int, int],
               tty: bool = False) -> tuple[subprocess.Popen[bytes], int, LimitGroup | None]:
        """``argv`` started in the sandbox on the host ``fds``, in a limits group of its own: (process, the read
        end of bwrap's status pipe, its group). With ``tty`` the command's stdin is its controlling terminal."""
        if self.merged is None:
            raise TestbedError("sandbox is not open")
        limits = LimitGroup(memory_bytes=self.limits.memory, pids=self.limits.pids, prefix=self.cgroup_prefix)
        has_limits = limits.create()
        rfd, wfd = os.pipe()
        seccomp = None if self.privileged else filter_fd()
        cmd = self._argv(argv, env, cwd, wfd, seccomp)
        if tty:  # its own pty (testbeds.terminal): it may be its controlling terminal
            cmd.remove("--new-session")
        keep_fds = [wfd] if seccomp is None else [wfd, seccomp]
        if self._netns is not None:  # the testbed's own namespace, where the archive proxy is
            cmd = ["nsenter", f"--net=/proc/self/fd/{self._netns}", "--", *cmd]
            keep_fds.append(self._netns)
        if has_limits:
            # Join the group before exec, so every descendant is accounted and killable.
            joins = " && ".join(f"echo $$ > {f}" for f in limits.procs_files())
            cmd = ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *cmd]
        try:
            proc = subprocess.Popen(cmd, stdin=fds[0], stdout=fds[1], stderr=fds[2], pass_fds=keep_fds,
                                    start_new_session=True, preexec_fn=take_terminal if tty else None)
        except BaseException:
            os.close(rfd)
            if has_limits:
                limits.destroy()
            raise
        finally:
            os.close(wfd)
            if seccomp is not None:
                os.close(seccomp)
        with self._lock:
            self._running.add(proc)
        return proc, rfd, limits if has_limits else None

    def _ended(self, proc: subprocess.Popen[bytes], rfd: int, group: LimitGroup | None) -> tuple[str, dict[str, int]]:
        """bwrap's status lines and the limits that struck; the group removed."""
        try:
            with os.fdopen(rfd, "rb") as status_pipe:
                status = status_pipe.read().decode("utf-8", "replace")
            return status, group.hits() if group is not None else {}
        finally:
            with self._lock:
                self._running.discard(proc)
            if group is not None:
                group.destroy()

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None) -> ExecResult:
        return busy_retried(lambda: self._exec(argv, env, timeout, stdin, cwd), argv[0])

    def _exec(self, argv: Sequence[str], env: Mapping[str, str] | None, timeout: float | None,
              stdin: bytes | None, cwd: str | None) -> ExecResult:
        started = time.monotonic()
        proc, rfd, group = self._start(argv, env or {}, cwd or "/", (
            subprocess.PIPE if stdin is not None else subprocess.DEVNULL, subprocess.PIPE, subprocess.PIPE))
        try:
            res = pump(proc, stdin, timeout=timeout, keep=stream_keep(self.limits), max_output=self.limits.output,
                       stop=lambda: kill_tree(proc, group))
        except BaseException:
            kill_tree(proc, group)
            self._ended(proc, rfd, group)
            raise
        status, hits = self._ended(proc, rfd, group)
        duration = time.monotonic() - started
        self._explain(hits, res.output_exceeded)
        if res.timed_out or res.output_exceeded:
            return ExecResult(None, res.stdout, res.stderr, duration, timed_out=res.timed_out)
        if '"child-pid"' not in status:
            raise TestbedError(f"sandbox failed to start (exit {proc.returncode}): "
                               f"{res.stderr.decode('utf-8', 'replace').strip()}")
        return ExecResult(exit_code(status, proc.returncode), res.stdout, res.stderr, duration)

    def written_since(self, since: float) -> list[str] | None:
        return files_written(self.slot.path / "upper", since) if self.slot is not None else None

    def attached(self, argv: Sequence[str], *, tty: bool, fds: tuple[int, int, int],
                 env: Mapping[str, str] | None = None) -> int:
        proc, rfd, group = self._start(argv, {"TERM": "xterm-256color" if tty else "dumb", **(env or {})}, "/root",
                                       fds, tty)
        try:
            proc.wait()
        finally:
            kill_tree(proc, group)
            status, _hits = self._ended(proc, rfd, group)
        return exit_code(status, proc.returncode)

    def _explain(self, hits: dict[str, int], output_exceeded: bool) -> None:
        """Remember which limit struck, so the verdict can say so."""
        for note in limit_notes(self.limits, oom_kills=hits.get("memory", 0), refused_forks=hits.get("pids", 0),
                                disk_full=self.slot is not None and self.slot.nearly_full(),
                                output_stopped=output_exceeded):
            with self._lock:
                if note not in self._notes:
                    self._notes.append(note)

    # -- files -------------------------------------------------------------------
    def _host_path(self, path: str, follow_last: bool = True) -> Path:
        if self.merged is None:
            raise TestbedError("sandbox is not open")
        return resolve_in_root(self.merged, path, follow_last=follow_last)

    def copy_in(self, src: Path, dest: str) -> None:
        target = self._host_path(dest, follow_last=False)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, target, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(src, target)
        except OSError as exc:
            raise TestbedError(f"copying {src} into the sandbox failed: {exc}") from exc

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
    caps = {ROOT, REVERT, NETWORK, ARCHIVE, PRISTINE, PRIVILEGED, arch(image.architecture)}
    return frozenset(caps | {LIMITS} if cgroup_mode() else caps)


class SandboxBackend(Backend):
    name = "sandbox"
    cost = Cost(memory_mb=256, cpus=0.5)

    def __init__(self, rootfs_cache: Path, workroot: Path) -> None:
        self.rootfs_cache = rootfs_cache
        self.workroot = workroot

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        return sandbox_capabilities(image)

    def why_not(self, image: ImageHandle) -> str | None:
        return why_cannot_run(image.architecture)

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(),
               limits: Limits = DEFAULTS) -> SandboxTestbed:
        lower = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
        reach = access(needs)
        archive = archive_hosts(lower) if reach == ARCHIVE else None
        return SandboxTestbed(image, lower, self.workroot, limits=limits, privileged=PRIVILEGED in needs,
                              archive=archive, network=reach == NETWORK)


def sweep(settings: Settings, sweep: Sweep) -> None:
    """``imageci gc``: a dead owner's sandboxes (their processes, their overlay mounts)."""
    sweep.dead_trees(settings.tmp_dir / "sandboxes", "sb-")
