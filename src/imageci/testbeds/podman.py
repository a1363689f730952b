"""podman testbed: the image's OCI form in a real container runtime.

The rootfs tarball becomes an OCI image layout (its one layer *is* the tested
tarball), pulled once per digest into podman's storage. Each testbed is a
fresh container, always removed. Two modes, chosen per test:

* command mode: ``sleep infinity`` keeps the container up; tests ``exec`` in it.
* systemd mode (``isolation-container``): systemd is PID 1, so tests can start
  services and ask ``systemctl is-system-running``. Offered when the image
  has systemd.

The network is off unless the test needs ``network``. On this kind of host
podman only works with runc and with rlimits not above the host's: imageci
passes both explicitly, and turns podman's cryptic refusals into errors that
name the fix.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from imageci.build.oci import image_config, write_layout
from imageci.build.rootfs import unpacked_rootfs
from imageci.errors import HostSetupError, TestbedError
from imageci.testbeds.base import Cost, ExecResult, ImageHandle
from imageci.testbeds.rootpath import resolve_in_root

LABEL = "io.imageci.testbed"
SETUP_HINT = "run scripts/host-setup.sh (installs podman + runc and writes /etc/containers/containers.conf.d/" \
             "50-imageci.conf)"


def podman_path() -> str:
    path = shutil.which("podman")
    if not path:
        raise HostSetupError(f"podman is not installed: {SETUP_HINT}")
    return path


def runtime_flags(nproc: int = 4096) -> list[str]:
    """runc, and rlimits no higher than what this host allows: the open-files
    limit is this process's own hard limit; the process limit is the testbed's
    pids budget (podman's conmon may run with a lower nproc than we do)."""
    flags = ["--runtime", shutil.which("runc") or "runc"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = hard if hard != resource.RLIM_INFINITY else soft
    if nofile != resource.RLIM_INFINITY:
        flags += ["--ulimit", f"nofile={nofile}:{nofile}"]
    _, hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard_nproc != resource.RLIM_INFINITY:
        nproc = min(nproc, hard_nproc)
    return [*flags, "--ulimit", f"nproc={nproc}:{nproc}"]


def explain_failure(stderr: str) -> str | None:
    """Map podman/runtime errors that mean 'host misconfigured' to the fix."""
    s = stderr.lower()
    if "setting rlimit" in s:
        return ("podman could not set the container's rlimits (they exceed this host's limits): "
                f"{SETUP_HINT}, or lower default_ulimits in containers.conf")
    if "crun" in s and "cgroup" in s:
        return f"crun cannot run on this host's cgroup layout; podman must use runc: {SETUP_HINT}"
    if "executable file `runc` not found" in s or "no such file or directory: runc" in s:
        return f"runc is not installed: {SETUP_HINT}"
    return None


def _run(argv: Sequence[str], *, timeout: float | None = 120, check: bool = True,
         input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        res = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"podman did not answer within {timeout}s: {' '.join(argv[:4])}") from exc
    if check and res.returncode != 0:
        err = res.stderr.decode("utf-8", "replace").strip()
        hint = explain_failure(err)
        if hint:
            raise HostSetupError(hint)
        raise TestbedError(f"{' '.join(argv[:3])} failed ({res.returncode}): {err[-800:]}")
    return res


class PodmanImages:
    """OCI layouts and podman image ids, one per image digest."""

    def __init__(self, oci_root: Path) -> None:
        self.oci_root = oci_root

    def ensure(self, image: ImageHandle) -> str:
        podman = podman_path()
        tag = f"localhost/imageci/{image.name}:{image.digest[:12]}"
        if _run([podman, "image", "exists", tag], check=False).returncode == 0:
            return tag
        layout = self.oci_root / image.digest
        write_layout(layout, image.rootfs_tar, image.digest, tag=image.digest[:12], architecture=image.architecture,
                     config=image_config(image.name, image.digest))
        out = _run([podman, "pull", "-q", f"oci:{layout}:{image.digest[:12]}"], timeout=600)
        image_id = out.stdout.decode().strip().splitlines()[-1]
        _run([podman, "tag", image_id, tag])
        return tag


class PodmanTestbed:
    name = "podman"

    def __init__(self, image: ImageHandle, tag: str, *, systemd: bool, network: bool,
                 memory: str | None = "2g", pids: int | None = 4096) -> None:
        self.image = image
        self.tag = tag
        self.systemd = systemd
        self.network = network
        self.memory = memory
        self.pids = pids
        self.container: str | None = None
        self.podman = podman_path()
        self._broken = ""

    def capabilities(self) -> frozenset[str]:
        """What this container offers: network only if it was created with one."""
        caps = {"root", "revert", f"arch:{self.image.architecture}", "limits"}
        if not self.systemd:
            caps.add("pristine")
        if self.network:
            caps.add("network")
        if self.systemd:
            caps.add("isolation-container")
        return frozenset(caps)

    def open(self) -> None:
        name = f"imageci-{uuid.uuid4().hex[:12]}"
        argv = [self.podman, "run", "-d", "--pull", "never", "--name", name, "--label", f"{LABEL}=1",
                "--hostname", "imageci-podman", *runtime_flags(self.pids or 4096)]
        if not self.network:
            argv += ["--network", "none"]
        if self.memory:
            argv += ["--memory", self.memory]
        if self.pids:
            argv += ["--pids-limit", str(self.pids)]
        if self.systemd:
            argv += ["--systemd", "always", self.tag, "/sbin/init"]
        else:
            argv += ["--entrypoint", "", self.tag, "sleep", "infinity"]
        self.container = name
        try:
            _run(argv)
        except BaseException:
            self.close()
            raise
        if self.systemd:
            self._wait_for_systemd()

    def _wait_for_systemd(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            r = _run([self.podman, "exec", self._name(), "systemctl", "is-system-running"], check=False, timeout=30)
            state = r.stdout.decode().strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise TestbedError(f"systemd in the container did not finish booting within {timeout:.0f}s (state: {state})")

    def _name(self) -> str:
        if self.container is None:
            raise TestbedError("podman testbed is not open")
        if self._broken:
            raise TestbedError(self._broken)
        return self.container

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None, network: bool = False) -> ExecResult:
        cmd = [self.podman, "exec", "--workdir", cwd or "/"]
        if stdin is not None:
            cmd.append("-i")
        for k, v in {"HOME": "/root", "LANG": "C.UTF-8", "IMAGECI_TESTBED": self.name, **(env or {})}.items():
            cmd += ["--env", f"{k}={v}"]
        cmd += [self._name(), *argv]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            # Killing `podman exec` leaves its process running in the container: stop the container.
            _run([self.podman, "kill", self._name()], check=False, timeout=60)
            self._broken = "the container was stopped after a command timed out"
            out, err = proc.communicate()
            return ExecResult(None, out, err, time.monotonic() - started, timed_out=True)
        except BaseException:
            proc.kill()
            proc.communicate()
            raise
        code = proc.returncode
        text = err.decode("utf-8", "replace")
        if code in (125, 126, 127) and text.startswith("Error:"):
            # podman's own failure (container gone, runtime error), not the command's
            hint = explain_failure(text)
            if hint:
                raise HostSetupError(hint)
            if code == 125 or "OCI runtime" in text or "no such container" in text.lower():
                raise TestbedError(f"podman exec failed: {text.strip()[-500:]}")
        return ExecResult(code, out, err, time.monotonic() - started)

    def copy_in(self, src: Path, dest: str) -> None:
        parent = os.path.dirname(dest.rstrip("/")) or "/"
        _run([self.podman, "exec", self._name(), "mkdir", "-p", parent])
        _run([self.podman, "cp", str(src), f"{self._name()}:{dest}"])

    def copy_out(self, src: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _run([self.podman, "cp", f"{self._name()}:{src}", str(dest)])

    def revert(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        if self.container is None:
            return
        name, self.container, self._broken = self.container, None, ""
        _run([self.podman, "rm", "-f", "-t", "0", name], check=False, timeout=120)


class PodmanBackend:
    name = "podman"
    cost = Cost(memory_mb=384, cpus=0.5)

    def __init__(self, oci_root: Path, rootfs_cache: Path) -> None:
        self.images = PodmanImages(oci_root)
        self.rootfs_cache = rootfs_cache

    def has_systemd(self, image: ImageHandle) -> bool:
        root = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
        init = resolve_in_root(root, "/sbin/init")  # the image's symlinks, never the host's
        return init.is_file() and init.name == "systemd"

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        caps = {"root", "revert", "network", "pristine", f"arch:{image.architecture}", "limits"}
        if self.has_systemd(image):
            caps.add("isolation-container")
        return frozenset(caps)

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset()) -> PodmanTestbed:
        tag = self.images.ensure(image)
        return PodmanTestbed(image, tag, systemd="isolation-container" in needs, network="network" in needs)


def leftover_containers() -> list[str]:
    """Containers a crashed imageci left behind (for `imageci gc`)."""
    podman = shutil.which("podman")
    if not podman:
        return []
    res = subprocess.run([podman, "ps", "-a", "--filter", f"label={LABEL}=1", "--format", "json"],
                         capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip():
        return []
    return [c["Names"][0] if isinstance(c.get("Names"), list) else c["Names"] for c in json.loads(res.stdout)]
