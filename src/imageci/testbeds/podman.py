"""podman testbed: the image's OCI form in a real container runtime.

The rootfs tarball becomes an OCI image layout (its one layer *is* the tested
tarball), pulled once per digest into this home's own image store
(``$IMAGECI_HOME/podman/storage``). Each testbed is a fresh container, always
removed, whose writable layer lives in a container storage of its own on the
testbed's disk slot (the home's image store is an additional, read-only image
store there): a test that writes past its disk budget gets ENOSPC. Two modes,
chosen per test:

* command mode: ``sleep infinity`` keeps the container up; tests ``exec`` in it.
* systemd mode (``isolation-container``): systemd is PID 1, so tests can start
  services and ask ``systemctl is-system-running``. Offered when the image
  has systemd.

Containers get podman's default hardening (Docker's capability set, seccomp
profile and masked paths) unless the test needs ``privileged``; memory and
pids limits are the test's; the network is off unless it needs ``network``
(with ``archive``, the archive proxy listens inside the container's own
network namespace: the image's apt archive is reachable, nothing else).
Every container is labelled with the home and the owner process, so cleanup
only ever touches its own. On this kind of host podman only works with runc
and with rlimits not above the host's: imageci passes both explicitly, and
turns podman's cryptic refusals into errors that name the fix.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from imageci.capabilities import (
    ARCHIVE,
    GPU,
    ISOLATION_CONTAINER,
    LIMITS,
    NETWORK,
    PRISTINE,
    PRIVILEGED,
    REVERT,
    ROOT,
    access,
    arch,
)
from imageci.config import Settings
from imageci.definitions.limits import DEFAULTS, Limits
from imageci.errors import HostSetupError, TestbedError
from imageci.formats.rootfs import unpacked_rootfs
from imageci.hostarch import why_cannot_run
from imageci.leftovers import Sweep
from imageci.owners import home_id, process_owner
from imageci.testbeds.archive import APT_CONF, APT_CONF_TEXT, archive_hosts, listen_in, proxy
from imageci.testbeds.base import Backend, Cost, ExecResult, ImageHandle, Testbed
from imageci.testbeds.disks import DiskSlot, dead_slots, disk_pool, files_written
from imageci.testbeds.gpu import CDI_DEVICE, why_no_gpu
from imageci.testbeds.imageinit import has_systemd
from imageci.testbeds.limits import LimitGroup, limit_notes, process_groups
from imageci.testbeds.output import pump, stream_keep
from imageci.testbeds.podmanstore import (
    ImageStore,
    explain_failure,
    podman_path,
    run_podman,
    runtime_flags,
    storage_conf,
)
from imageci.testbeds.procroot import copy_file_into

LABEL = "io.imageci.testbed"
HOME_LABEL = "io.imageci.home"
OWNER_LABEL = "io.imageci.owner"


class PodmanTestbed(Testbed):
    name = "podman"

    def __init__(self, image: ImageHandle, tag: str, store: ImageStore, tmp: Path, *, systemd: bool,
                 network: bool, privileged: bool = False, limits: Limits = DEFAULTS,
                 archive: frozenset[tuple[str, str, int]] | None = None, gpu: bool = False) -> None:
        self.image = image
        self.gpu = gpu  # the host's GPUs, through CDI
        self.tag = tag
        self.store = store
        self.tmp = tmp
        self.systemd = systemd
        self.network = network
        self.privileged = privileged
        self.limits = limits.over(DEFAULTS)
        self.container: str | None = None
        self.slot: DiskSlot | None = None
        self.env: dict[str, str] = {}
        self.podman = podman_path()
        self._broken = ""
        self._pid = 0
        self._pidfd: int | None = None  # holds the container's first process (copy_in writes into its root)
        self._notes: list[str] = []
        self.archive = archive
        self._listener: socket.socket | None = None

    def capabilities(self) -> frozenset[str]:
        """What this container offers: network only if it was created with one."""
        caps = {ROOT, REVERT, arch(self.image.architecture), LIMITS, PRIVILEGED}
        if not self.systemd:
            caps.add(PRISTINE)
        if self.network:
            caps.add(NETWORK)
        if self.archive is not None:
            caps.add(ARCHIVE)
        if self.systemd:
            caps.add(ISOLATION_CONTAINER)
        if self.gpu:
            caps.add(GPU)
        return frozenset(caps)

    def limit_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def open(self) -> None:
        owner = process_owner(self.tmp).token
        name = f"imageci-{owner}-{uuid.uuid4().hex[:8]}"
        try:
            assert self.limits.disk is not None
            self.slot = disk_pool(self.tmp).acquire(self.limits.disk)
            conf = self.slot.path / "storage.conf"
            conf.write_text(storage_conf(self.slot.path / "storage", self.slot.path / "run",
                                         [self.store.graphroot]))
            self.env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
            self.container = name
            pidfile = self.slot.path / "container.pid"  # podman writes it: no `podman inspect` afterwards
            pidfile.unlink(missing_ok=True)  # (a slot is reused)
            self._start(name, owner, pidfile)
            self._pid = int(pidfile.read_text().strip() or 0)
            with contextlib.suppress(OSError):
                self._pidfd = os.pidfd_open(self._pid) if self._pid else None
            if self.systemd:
                self._wait_for_systemd()
            if self.archive is not None and not self.network:
                self._listener = listen_in(self._pid)
                proxy().serve(self._listener, self.archive)
                run_podman([self.podman, "exec", name, "sh", "-c", f"mkdir -p {os.path.dirname(APT_CONF)} && "
                      f"cat > {APT_CONF}"], input=APT_CONF_TEXT.encode(), env=self.env, cwd=self._cwd())
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, owner: str, pidfile: Path) -> None:
        """``podman run``; an image the store no longer has (known copied, then removed) is copied again."""
        try:
            run_podman(self.run_argv(name, owner, pidfile), env=self.env, cwd=self._cwd())
        except TestbedError as exc:
            if f"{self.tag}: image not known" not in str(exc):
                raise
            self.tag = self.store.ensure(self.image, lost=True)
            run_podman(self.run_argv(name, owner, pidfile), env=self.env, cwd=self._cwd())

    def run_argv(self, name: str, owner: str, pidfile: Path | None = None) -> list[str]:
        """The ``podman run`` that makes this testbed's container (its process id written to ``pidfile``)."""
        argv = [self.podman, "run", "-d", *(["--pidfile", str(pidfile)] if pidfile else []), "--pull", "never",
                "--name", name, "--label", f"{LABEL}=1",
                "--label", f"{HOME_LABEL}={home_id(self.tmp.parent)}", "--label", f"{OWNER_LABEL}={owner}",
                "--hostname", "imageci-podman", *runtime_flags(self.limits.pids or 4096)]
        if not self.network:
            argv += ["--network", "none"]
        if self.privileged:
            argv.append("--privileged")
        if self.gpu:
            argv += ["--device", CDI_DEVICE]  # every GPU, with nvidia-smi and the driver's libraries (CDI)
        if self.limits.memory:
            argv += ["--memory", f"{self.limits.memory}b", "--memory-swap", f"{self.limits.memory}b"]
        if self.limits.pids:
            argv += ["--pids-limit", str(self.limits.pids)]
        if self.systemd:
            argv += ["--systemd", "always", self.tag, "/sbin/init"]
        else:
            argv += ["--entrypoint", "", self.tag, "sleep", "infinity"]
        return argv

    def _wait_for_systemd(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            r = run_podman([self.podman, "exec", self._name(), "systemctl", "is-system-running"], check=False,
                           timeout=30, env=self.env, cwd=self._cwd())
            state = r.stdout.decode().strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise TestbedError(f"systemd in the container did not finish booting within {timeout:.0f}s (state: {state})")

    def _cwd(self) -> Path | None:
        """Where podman runs (and the conmon it starts, which writes a file named ``oom`` into its working
        directory when the kernel kills a process of the container): the testbed's disk slot, never the
        directory imageci was started in."""
        return self.slot.path if self.slot is not None else None

    def _name(self) -> str:
        if self.container is None:
            raise TestbedError("podman testbed is not open")
        if self._broken:
            raise TestbedError(self._broken)
        return self.container

    def _hits(self) -> dict[str, int]:
        return LimitGroup(name="container", dirs=process_groups(self._pid)).hits() if self._pid else {}

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None) -> ExecResult:
        cmd = [self.podman, "exec", "--workdir", cwd or "/"]
        if stdin is not None:
            cmd.append("-i")
        for k, v in {"HOME": "/root", "LANG": "C.UTF-8", "IMAGECI_TESTBED": self.name, **(env or {})}.items():
            cmd += ["--env", f"{k}={v}"]
        cmd += [self._name(), *argv]
        before = self._hits()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=self.env,
                                cwd=self._cwd())

        def stop() -> None:
            # Killing `podman exec` leaves its process running in the container: stop the container.
            run_podman([self.podman, "kill", self._name()], check=False, timeout=60, env=self.env)
            self._broken = "the container was stopped after a command ran past its timeout or output limit"

        try:
            res = pump(proc, stdin, timeout=timeout, keep=stream_keep(self.limits), max_output=self.limits.output,
                       stop=stop)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        self._explain(before, self._hits(), res.output_exceeded)
        duration = time.monotonic() - started
        if res.timed_out or res.output_exceeded:
            return ExecResult(None, res.stdout, res.stderr, duration, timed_out=res.timed_out)
        code = proc.returncode
        text = res.stderr.decode("utf-8", "replace")
        if code in (125, 126, 127) and text.startswith("Error:"):
            # podman's own failure (container gone, runtime error), not the command's
            hint = explain_failure(text)
            if hint:
                raise HostSetupError(hint)
            if code == 125 or "OCI runtime" in text or "no such container" in text.lower():
                raise TestbedError(f"podman exec failed: {text.strip()[-500:]}")
        return ExecResult(code, res.stdout, res.stderr, duration)

    def written_since(self, since: float) -> list[str] | None:
        """The container's own layer: the one layer in its slot's storage (the image is in a store beside)."""
        if self.slot is None or self.systemd:
            return None  # (systemd's units are read inside: checks.complaints enters it anyway)
        layers = [d / "diff" for d in (self.slot.path / "storage" / "overlay").glob("*") if (d / "diff").is_dir()]
        return [f for layer in layers for f in files_written(layer, since)]

    def attached(self, argv: Sequence[str], *, tty: bool, fds: tuple[int, int, int],
                 env: Mapping[str, str] | None = None) -> int:
        cmd = [self.podman, "exec", "-i", *(["-t"] if tty else []), "--workdir", "/root"]
        for k, v in {"HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm-256color" if tty else "dumb",
                     "IMAGECI_TESTBED": self.name, **(env or {})}.items():
            cmd += ["--env", f"{k}={v}"]
        return subprocess.run([*cmd, self._name(), *argv], stdin=fds[0], stdout=fds[1], stderr=fds[2],
                              start_new_session=True, env=self.env, check=False, cwd=self._cwd()).returncode

    def _explain(self, before: dict[str, int], after: dict[str, int], output_exceeded: bool) -> None:
        notes = limit_notes(self.limits, oom_kills=after.get("memory", 0) - before.get("memory", 0),
                            refused_forks=after.get("pids", 0) - before.get("pids", 0),
                            disk_full=self.slot is not None and self.slot.nearly_full(), output_stopped=output_exceeded)
        self._notes += [n for n in notes if n not in self._notes]

    def copy_in(self, src: Path, dest: str) -> None:
        if self._pidfd is not None and src.is_file() and not src.is_symlink():
            self._name()  # (open and not broken)
            with contextlib.suppress(OSError):  # else podman's own copy (and its word for what is wrong)
                return copy_file_into(self._pidfd, self._pid, src, dest)  # from the host: no podman process
        # One `podman cp` of a tar stream (a `mkdir -p` in the container first was a podman command more, a
        # tenth of a second): the extraction makes the missing parents (root's, 0755) and leaves those there
        # as they are; a tree merges into a directory already there, as in the sandbox.
        with tempfile.TemporaryFile(dir=self.tmp) as archive:
            with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.add(src, arcname=dest.strip("/") or ".", filter=_as_root)
            archive.seek(0)
            run_podman([self.podman, "cp", "-", f"{self._name()}:/"], stdin=archive, env=self.env, cwd=self._cwd())

    def copy_out(self, src: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        run_podman([self.podman, "cp", f"{self._name()}:{src}", str(dest)], env=self.env)

    def revert(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        if self._listener is not None:
            proxy().stop(self._listener)
            self._listener = None
        name, self.container, self._broken, self._pid = self.container, None, "", 0
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if name is not None:
            run_podman([self.podman, "rm", "-f", "-t", "0", name], check=False, timeout=120, env=self.env)
        if self.slot is not None:
            slot, self.slot = self.slot, None
            disk_pool(self.tmp).release(slot)


def _as_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


class PodmanBackend(Backend):
    name = "podman"
    cost = Cost(memory_mb=384, cpus=0.5)

    def __init__(self, home: Path, rootfs_cache: Path) -> None:
        self.store = ImageStore(home / "podman")
        self.tmp = home / "tmp"
        self.rootfs_cache = rootfs_cache

    def why_not(self, image: ImageHandle) -> str | None:
        return why_cannot_run(image.architecture)

    @functools.cached_property
    def no_gpu(self) -> str | None:
        """Why containers get no GPU here (None: they get every GPU through CDI when a test needs ``gpu``)."""
        return why_no_gpu()

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        caps = {ROOT, REVERT, NETWORK, ARCHIVE, PRISTINE, PRIVILEGED, arch(image.architecture), LIMITS}
        if has_systemd(image, self.rootfs_cache):
            caps.add(ISOLATION_CONTAINER)
        if self.no_gpu is None:
            caps.add(GPU)
        return frozenset(caps)

    def lacking(self, words: Sequence[str]) -> str:
        return self.no_gpu or "" if GPU in words else ""

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(),
               limits: Limits = DEFAULTS) -> PodmanTestbed:
        tag = self.store.ensure(image)
        reach = access(needs)
        archive = None
        if reach == ARCHIVE:
            archive = archive_hosts(unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache))
        return PodmanTestbed(image, tag, self.store, self.tmp, systemd=ISOLATION_CONTAINER in needs,
                             network=reach == NETWORK, privileged=PRIVILEGED in needs, limits=limits, archive=archive,
                             gpu=GPU in needs)


def remove_containers(storage_conf_path: Path) -> list[str]:
    """Remove every container of one container storage (a dead owner's disk slot); their names."""
    podman = shutil.which("podman")
    if not podman or not storage_conf_path.exists():
        return []
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(storage_conf_path)}
    res = subprocess.run([podman, "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, env=env)
    names = res.stdout.split() if res.returncode == 0 else []
    for name in names:
        subprocess.run([podman, "rm", "-f", "-t", "0", name], capture_output=True, env=env)
    return names


def sweep(settings: Settings, sweep: Sweep) -> None:
    """``imageci gc``: the containers in a dead owner's disk slots (before ``disks.sweep`` unmounts them)."""
    for slot in dead_slots(settings.tmp_dir / "disks", sweep):
        for name in remove_containers(slot / "storage.conf"):
            sweep.done.append(f"removed container {name}")
