"""lxd testbed: the image as an LXD host runs it, pulled from imageci's feed.

Each testbed is a fresh *ephemeral* LXD container, launched by fingerprint
from the run's feed (``testbeds.lxdfeed``: the version's LXD form, written by
the channels' simplestreams writer), as a production host pulls a channel.
LXD checks every file's sha256 and the fingerprint on the way in, so the
bytes that boot are the bytes published.

- Talks to the local daemon with the ``lxc`` client (``lxc query`` for the
  REST API, ``lxc exec`` and ``lxc file`` for commands and files), with a
  client configuration of this home's own (``$IMAGECI_HOME/lxc``): the
  user's remotes and settings are never read or changed.
- Isolation: an unprivileged container (LXD's default idmap) with no profile
  and only a root disk, so no network device whatever the host's default
  profile holds; ``limits.memory`` and ``limits.processes`` are the test's.
  Disk is not limited (a ``dir`` pool has no quotas): the testbed does not
  offer ``limits``, and a test that needs it is skipped with the reason.
- Readiness is probed, never slept: ``lxc exec … true`` answers, then, with
  systemd as init, ``systemctl is-system-running`` is ``running`` or
  ``degraded``.
- Revert is a fresh instance. Every instance is named for the owner process
  (``imageci-TOKEN-…``) and carries ``user.imageci.home`` and
  ``user.imageci.owner``: closing deletes it, and gc deletes a dead owner's.
  An image LXD did not have before the run pulled it is deleted when the run
  ends (unless another instance still uses it); one it had is left alone.
- The first pull through a run's feed is made alone: LXD 5.0 creates its
  cache directory for a simplestreams server on first contact with a
  check-then-mkdir, so two first pulls at once from the same URL fail with
  "file exists". Once one pull has succeeded, the others run in parallel.
- ``lxd-vm``: LXD virtual machines need KVM and vhost-vsock and a VM form of
  the image (a disk image); where the daemon cannot run VMs, or the version
  has no VM form, every test on it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from imageci.capabilities import ISOLATION_CONTAINER, REVERT, ROOT, arch
from imageci.config import Settings
from imageci.definitions.limits import DEFAULTS, Limits
from imageci.errors import TestbedError
from imageci.hostarch import why_cannot_run
from imageci.leftovers import Sweep
from imageci.owners import home_id, process_owner
from imageci.testbeds.base import Backend, Cost, ExecResult, ImageHandle, Testbed
from imageci.testbeds.imageinit import has_init, has_systemd
from imageci.testbeds.lxdclient import (
    HOME_KEY,
    OWNER_KEY,
    READY_TIMEOUT,
    SETUP_HINT,
    LxdClient,
    forget_feed_cache,
    remove_instances,
    runs_vms,
)
from imageci.testbeds.lxdfeed import RunFeed
from imageci.testbeds.names import PROVIDE_SCRIPT
from imageci.testbeds.output import pump, stream_keep


class LxdTestbed(Testbed):
    name = "lxd"

    def __init__(self, backend: LxdBackend, image: ImageHandle, fingerprint: str, *, systemd: bool,
                 limits: Limits = DEFAULTS) -> None:
        self.backend = backend
        self.client = backend.client
        self.image = image
        self.fingerprint = fingerprint
        self.systemd = systemd
        self.limits = limits.over(DEFAULTS)
        self.instance: str | None = None
        self._broken = ""
        self._notes: list[str] = []

    def capabilities(self) -> frozenset[str]:
        caps = {ROOT, REVERT, arch(self.image.architecture)}
        if self.systemd:
            caps.add(ISOLATION_CONTAINER)
        return frozenset(caps)

    def limit_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def open(self) -> None:
        owner = process_owner(self.backend.tmp).token
        name = f"imageci-{owner}-{uuid.uuid4().hex[:8]}"
        feed = self.backend.feed()
        config = {HOME_KEY: home_id(self.backend.home), OWNER_KEY: owner}
        if self.limits.memory:
            config["limits.memory"] = f"{self.limits.memory}B"
        if self.limits.pids:
            config["limits.processes"] = str(self.limits.pids)
        body = {"name": name, "type": "container", "ephemeral": True, "profiles": [],
                "devices": {"root": {"type": "disk", "path": "/", "pool": self.backend.pool()}},
                "config": config,
                "source": {"type": "image", "mode": "pull", "protocol": "simplestreams", "server": feed.url,
                           "certificate": feed.certificate, "fingerprint": self.fingerprint}}
        self.instance = name
        try:
            with self.backend.first_contact():
                self.client.query("POST", "/1.0/instances", body, wait=True, timeout=900)
            self.client.query("PUT", f"/1.0/instances/{name}/state", {"action": "start", "timeout": 60},
                              wait=True, timeout=120)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        self._until_done(["true"], deadline)
        # localhost resolves where the image ships no /etc/hosts (the instance's files; the image keeps its bytes)
        self._until_done(["sh", "-c", PROVIDE_SCRIPT], deadline)
        state = "systemctl did not answer"
        while self.systemd and time.monotonic() < deadline:
            r = self._probe(["systemctl", "is-system-running"], deadline)
            state = r.stdout.decode().strip() if r is not None else "systemctl did not answer"
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        if self.systemd:
            raise TestbedError(f"systemd in the LXD container did not finish booting within {READY_TIMEOUT:.0f}s "
                               f"(state: {state})")

    def _until_done(self, argv: list[str], deadline: float) -> None:
        """Run ``argv`` in the container until it exits 0 (a container still starting, or an exec that LXD
        dropped on a busy host, is asked again until ``deadline``)."""
        state = "no answer to lxc exec"
        while time.monotonic() < deadline:
            r = self._probe(argv, deadline)
            if r is not None and r.returncode == 0:
                return
            if r is None:
                state = "lxc exec did not answer"
            else:
                state = r.stderr.decode("utf-8", "replace").strip()[-200:] or f"exit status {r.returncode}"
            time.sleep(0.1)
        raise TestbedError(f"the LXD container did not answer within {READY_TIMEOUT:.0f}s ({state})")

    def _probe(self, argv: list[str], deadline: float) -> subprocess.CompletedProcess[bytes] | None:
        """One readiness probe; None when it did not answer in time (a container still starting on a busy
        host: the next probe may, until ``deadline``)."""
        try:
            return self.client.run(["exec", self._name(), "-T", "-n", "--", *argv], check=False,
                                   timeout=max(1.0, min(30.0, deadline - time.monotonic())))
        except TestbedError:
            if self.instance is None or self._broken:
                raise
            return None

    def _name(self) -> str:
        if self.instance is None:
            raise TestbedError("lxd testbed is not open")
        if self._broken:
            raise TestbedError(self._broken)
        return self.instance

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None) -> ExecResult:
        cmd = [self.client.path(), "exec", self._name(), "-T", "--cwd", cwd or "/"]
        if stdin is None:
            cmd.append("-n")
        for k, v in {"HOME": "/root", "LANG": "C.UTF-8", "IMAGECI_TESTBED": self.name, **(env or {})}.items():
            cmd += ["--env", f"{k}={v}"]
        cmd += ["--", *argv]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                env=self.client.env())

        def stop() -> None:
            # killing `lxc exec` leaves the command running in the container: stop the container (ephemeral:
            # it is gone then)
            name = self.instance
            if name is not None:
                self.client.delete_instance(name)
            self._broken = "the container was stopped after a command ran past its timeout or output limit"

        try:
            res = pump(proc, stdin, timeout=timeout, keep=stream_keep(self.limits), max_output=self.limits.output,
                       stop=stop)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        duration = time.monotonic() - started
        if res.output_exceeded:
            self._notes.append(f"output limit ({self.limits.output} bytes) reached: the command was stopped")
        if res.timed_out or res.output_exceeded:
            return ExecResult(None, res.stdout, res.stderr, duration, timed_out=res.timed_out)
        code = proc.returncode
        if code != 0 and res.stderr.startswith(b"Error: ") and not self._running():
            raise TestbedError(f"lxc exec failed: {res.stderr.decode('utf-8', 'replace').strip()[-500:]}")
        return ExecResult(code, res.stdout, res.stderr, duration)

    def attached(self, argv: Sequence[str], *, tty: bool, fds: tuple[int, int, int],
                 env: Mapping[str, str] | None = None) -> int:
        cmd = [self.client.path(), "exec", self._name(), "-t" if tty else "-T", "--cwd", "/root"]
        for k, v in {"HOME": "/root", "LANG": "C.UTF-8", "TERM": "xterm-256color" if tty else "dumb",
                     "IMAGECI_TESTBED": self.name, **(env or {})}.items():
            cmd += ["--env", f"{k}={v}"]
        return subprocess.run([*cmd, "--", *argv], stdin=fds[0], stdout=fds[1], stderr=fds[2],
                              start_new_session=True, env=self.client.env(), check=False).returncode

    def _running(self) -> bool:
        state = self.client.query("GET", f"/1.0/instances/{self._name()}/state", check=False, timeout=30)
        return isinstance(state, dict) and state.get("status") == "Running"

    def copy_in(self, src: Path, dest: str) -> None:
        target = dest.rstrip("/") or "/"
        parent = os.path.dirname(target) or "/"
        if src.is_dir():
            # `lxc file push -r DIR C/PARENT/` makes C/PARENT/basename(DIR): stage the tree under the wanted name
            with tempfile.TemporaryDirectory(dir=self.backend.tmp) as stage:
                named = Path(stage) / os.path.basename(target)
                shutil.copytree(src, named, symlinks=True)
                self.client.run(["file", "push", "-r", "-p", str(named), f"{self._name()}{parent}/"])
        else:
            self.client.run(["file", "push", "-p", str(src), f"{self._name()}{target}"])

    def copy_out(self, src: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as stage:
            self.client.run(["file", "pull", "-r", f"{self._name()}{src.rstrip('/')}", f"{stage}/"])
            got = Path(stage) / os.path.basename(src.rstrip("/"))
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(got, dest)

    def revert(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        name, self.instance, self._broken = self.instance, None, ""
        if name is not None:
            self.client.delete_instance(name)


class LxdBackend(Backend):
    name = "lxd"
    cost = Cost(memory_mb=256, cpus=0.5)

    def __init__(self, home: Path, rootfs_cache: Path) -> None:
        self.home = home
        self.tmp = home / "tmp"
        self.rootfs_cache = rootfs_cache
        self.client = LxdClient(home)
        self._lock = threading.Lock()
        self._feed: RunFeed | None = None
        self._pool: str | None = None
        self._known: set[str] = set()  # fingerprints added to the run feed
        self._pulled: set[str] = set()  # … of them, those LXD did not have before this run
        self._contact = threading.Lock()  # held by the first pull through the run feed
        self._contacted = False  # LXD has reached the run feed once (its cache directory exists)

    @contextmanager
    def first_contact(self) -> Iterator[None]:
        """Around a pull from the run feed: until one has succeeded, one at a time."""
        if self._contacted:
            yield
            return
        with self._contact:
            if self._contacted:
                yield
                return
            yield
            self._contacted = True

    def why_not(self, image: ImageHandle) -> str | None:
        reason = why_cannot_run(image.architecture)
        if reason:
            return reason
        if image.lxd is None:
            return f"{image.name}@…{image.digest[:12]}: {image.lxd_absent}"
        if not has_init(image, self.rootfs_cache):
            return "the image has no /sbin/init, and an LXD container boots one"
        return None

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        caps = {ROOT, REVERT, arch(image.architecture)}
        if has_systemd(image, self.rootfs_cache):
            caps.add(ISOLATION_CONTAINER)
        return frozenset(caps)

    def feed(self) -> RunFeed:
        with self._lock:
            if self._feed is None:
                self._feed = RunFeed(self.tmp, process_owner(self.tmp).token)
            return self._feed

    def pool(self) -> str:
        with self._lock:
            if self._pool is None:
                self._pool = self.client.root_pool()
            return self._pool

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(), limits: Limits = DEFAULTS) -> LxdTestbed:
        if image.lxd is None:
            raise TestbedError(f"{image.name}: {image.lxd_absent}")
        self.client.require()
        fingerprint = image.lxd.fingerprint
        feed = self.feed()
        with self._lock:
            if fingerprint not in self._known:
                feed.add(image)
                if not self.client.image_exists(fingerprint):
                    self._pulled.add(fingerprint)
                self._known.add(fingerprint)
        return LxdTestbed(self, image, fingerprint, systemd=has_systemd(image, self.rootfs_cache), limits=limits)

    def finish(self) -> None:
        self._finish(held=False)

    def _finish(self, *, held: bool) -> None:
        with self._lock:
            feed, self._feed = self._feed, None
            pulled, self._pulled = self._pulled, set()
            self._known = set()
            self._contacted = False
        if feed is not None:
            feed.close()
            forget_feed_cache(feed.url)
        if pulled:
            in_use = {str((i.get("config") or {}).get("volatile.base_image", "")) for i in self.client.instances()}
            for fingerprint in sorted(pulled - in_use):
                self.client.query("DELETE", f"/1.0/images/{fingerprint}", wait=True, check=False, timeout=120)
            if held:  # a held container's image: its holder's finish() deletes it after the container
                with self._lock:
                    self._pulled |= pulled & in_use

    def finish_but_held(self) -> None:
        """The run's feed stops and the images it pulled go, but those of held containers (kept for the holder)."""
        self._finish(held=True)


class LxdVmBackend(Backend):
    """LXD virtual machines: where this daemon cannot run them, or the version has no VM form, every
    test is skipped with the reason."""

    name = "lxd-vm"
    cost = Cost(memory_mb=1024, cpus=1.0)

    def __init__(self, home: Path) -> None:
        self.client = LxdClient(home)

    def why_not(self, image: ImageHandle) -> str | None:
        info = self.client.server()
        if info is None:
            return f"the LXD daemon is not answering: {SETUP_HINT}"
        driver = str((info.get("environment") or {}).get("driver", ""))
        if not runs_vms(info):
            missing = [p for p in ("/dev/kvm", "/dev/vhost-vsock") if not os.path.exists(p)]
            return (f"LXD on this host cannot run virtual machines (driver: {driver or 'none'}"
                    + (f"; missing {', '.join(missing)}" if missing else "") + ")")
        return f"{image.name}: imageci makes no LXD VM form (disk-kvm.img) of a version yet"

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        return frozenset({ROOT, REVERT, arch(image.architecture), ISOLATION_CONTAINER})

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(), limits: Limits = DEFAULTS) -> Testbed:
        raise TestbedError(self.why_not(image) or "lxd-vm cannot run here")


def sweep(settings: Settings, sweep: Sweep) -> None:
    """``imageci gc``: a dead owner's run feeds and LXD instances."""
    sweep.dead_trees(settings.tmp_dir, "lxdfeed-")
    for name in remove_instances(settings.home, lambda token: sweep.dead(token or None)):
        sweep.done.append(f"removed LXD instance {name}")
