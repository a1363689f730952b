"""LXD as imageci talks to it: through ``lxc query``, ``exec`` and ``file`` with the home's own
client configuration; the daemon's state for ``imageci doctor``; and the instances a dead owner left."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from imageci.errors import HostSetupError, TestbedError
from imageci.owners import home_id

HOME_KEY = "user.imageci.home"


OWNER_KEY = "user.imageci.owner"


SETUP_HINT = "run scripts/host-setup.sh, then scripts/lxd-up.sh (starts LXD and initialises it with a preseed)"


READY_TIMEOUT = 120.0


LXD_CACHE = Path("/var/cache/lxd")  # Debian's lxd package: where the daemon caches simplestreams indexes


def forget_feed_cache(url: str, cache: Path = LXD_CACHE) -> None:
    """Remove the daemon's cached indexes of a run feed (the directory named for the sha256 of its URL;
    the URL is the run's own: a random port and path)."""
    shutil.rmtree(cache / hashlib.sha256(url.encode()).hexdigest(), ignore_errors=True)


class LxdClient:
    """The local LXD daemon, through ``lxc`` with this home's own client configuration."""

    def __init__(self, home: Path) -> None:
        self.conf = home / "lxc"

    def env(self) -> dict[str, str]:
        self.conf.mkdir(parents=True, exist_ok=True, mode=0o700)
        return {**os.environ, "LXD_CONF": str(self.conf)}

    @staticmethod
    def path() -> str:
        found = shutil.which("lxc")
        if not found:
            raise HostSetupError(f"the lxc client is not installed: {SETUP_HINT}")
        return found

    def run(self, argv: Sequence[str], *, timeout: float = 300, check: bool = True,
            input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        try:
            done = subprocess.run([self.path(), *argv], capture_output=True, timeout=timeout, input=input,
                                  env=self.env())
        except subprocess.TimeoutExpired as exc:
            raise TestbedError(f"LXD did not answer within {timeout:.0f}s: lxc {' '.join(argv[:3])}") from exc
        if check and done.returncode != 0:
            raise TestbedError(f"lxc {' '.join(argv[:3])} failed: "
                               f"{done.stderr.decode('utf-8', 'replace').strip()[-600:]}")
        return done

    def query(self, method: str, path: str, data: Mapping[str, Any] | None = None, *, wait: bool = False,
              timeout: float = 300, check: bool = True) -> Any:
        """One REST call (``wait``: until its operation ends); the JSON answer, or None when ``check`` is off
        and it failed."""
        argv = ["query", "-X", method, *(["--wait"] if wait else [])]
        if data is not None:
            argv += ["-d", json.dumps(data)]
        done = self.run([*argv, path], timeout=timeout, check=check)
        if done.returncode != 0:
            return None
        text = done.stdout.decode("utf-8", "replace").strip()
        return json.loads(text) if text else {}

    def server(self) -> dict[str, Any] | None:
        """The daemon's ``/1.0`` (None: not installed or not answering)."""
        if shutil.which("lxc") is None:
            return None
        try:
            info = self.query("GET", "/1.0", timeout=10, check=False)
        except TestbedError:
            return None
        return info if isinstance(info, dict) else None

    def require(self) -> dict[str, Any]:
        info = self.server()
        if info is None:
            self.path()
            raise HostSetupError(f"the LXD daemon is not answering: {SETUP_HINT}")
        return info

    def root_pool(self) -> str:
        """The storage pool of the default profile's root disk (where instances are made)."""
        profile = self.query("GET", "/1.0/profiles/default", check=False) or {}
        for device in (profile.get("devices") or {}).values():
            if device.get("type") == "disk" and device.get("path") == "/" and device.get("pool"):
                return str(device["pool"])
        pools = self.query("GET", "/1.0/storage-pools") or []
        if not pools:
            raise HostSetupError(f"LXD has no storage pool: {SETUP_HINT}")
        return str(pools[0]).rsplit("/", 1)[-1]

    def image_exists(self, fingerprint: str) -> bool:
        return self.query("GET", f"/1.0/images/{fingerprint}", check=False) is not None

    def instances(self) -> list[dict[str, Any]]:
        found = self.query("GET", "/1.0/instances?recursion=1", check=False)
        return found if isinstance(found, list) else []

    def delete_instance(self, name: str) -> None:
        """Stop (an ephemeral instance is then gone) and delete; quiet when it is gone already."""
        self.query("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True}, wait=True,
                   check=False, timeout=120)
        self.query("DELETE", f"/1.0/instances/{name}", wait=True, check=False, timeout=120)


def runs_vms(info: Mapping[str, Any]) -> bool:
    """Whether the daemon (its ``/1.0``) can run virtual machines: it has the qemu driver."""
    return "qemu" in str((info.get("environment") or {}).get("driver", ""))


def describe(home: Path) -> tuple[bool, str, bool]:
    """LXD's state for ``imageci doctor``: whether the lxd testbed can run, what was found, and whether
    the daemon runs VMs."""
    if shutil.which("lxc") is None:
        return False, f"lxc is not installed: {SETUP_HINT}", False
    client = LxdClient(home)
    info = client.server()
    if info is None:
        return False, f"the LXD daemon is not answering: {SETUP_HINT}", False
    env = info.get("environment") or {}
    try:
        pool = client.root_pool()
    except (HostSetupError, TestbedError) as exc:
        return False, f"LXD {env.get('server_version', '?')} answers, but {exc}", False
    return True, (f"LXD {env.get('server_version', '?')}, driver {env.get('driver', '?')}, "
                  f"storage pool {pool!r}"), runs_vms(info)


def remove_instances(home: Path, dead: Callable[[str], bool]) -> list[str]:
    """Delete the LXD instances of ``home`` whose owner ``dead(token)`` says is gone; their names."""
    if shutil.which("lxc") is None:
        return []
    client = LxdClient(home)
    if client.server() is None:
        return []
    mine = home_id(home)
    removed = []
    for inst in client.instances():
        config = inst.get("config") or {}
        if config.get(HOME_KEY) == mine and dead(str(config.get(OWNER_KEY, ""))):
            client.delete_instance(str(inst["name"]))
            removed.append(str(inst["name"]))
    return removed
