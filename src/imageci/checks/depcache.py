"""Test dependencies installed once per (image state, dependency set).

autopkgtest runs ``apt-get update`` and downloads every test's dependencies
again for each test. Here the first install of a dependency set keeps apt's
package lists and the downloaded .debs (in a private apt directory inside the
testbed, never the image's own), and stores them on the host keyed by the
image's dpkg status, its apt sources, the package set and the recommends
choice. Every later install of the same set on the same image copies them in
and installs with ``--no-download``: no ``apt-get update``, no downloads, and
no network needed.

Where the testbed keeps layers (the sandbox), the first install also saves
what it wrote as a layer, and every later test of the same set on the same
image starts from a testbed with that layer stacked under its writable layer:
nothing is installed at all. Installs run with dpkg's ``--force-unsafe-io``
(a testbed is thrown away; fsync per file buys nothing).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imageci import cacheuse
from imageci.capabilities import ARCHIVE, NETWORK
from imageci.checks.base import Outcome, format_log
from imageci.testbeds.base import ExecResult, Testbed
from imageci.verdicts import Verdict

APT_DIR = "/var/tmp/imageci/apt"
APT_OPTS = (f"-o Dir::State::Lists={APT_DIR}/lists -o Dir::Cache::Archives={APT_DIR}/archives "
            "-o APT::Keep-Downloaded-Packages=true -o APT::Sandbox::User=root "
            "-o Dpkg::Options::=--force-unsafe-io")  # a testbed is thrown away: no fsync per file
LAYER_EXCLUDE = (APT_DIR,)  # lists and .debs stay in the .deb cache, not in the layer
LISTS_MAX_AGE = 6 * 3600  # package lists older than this are fetched again
STATE_PROBE = ("cat /var/lib/dpkg/status /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | sha256sum; "
               "dpkg --print-architecture")


@dataclass(frozen=True)
class DependencyCache:
    root: Path

    def key(self, state: str, packages: Sequence[str], recommends: bool) -> str:
        doc = "\n".join([state, *sorted(packages), f"recommends={recommends}", "v1"])
        return hashlib.sha256(doc.encode()).hexdigest()

    def get(self, key: str, max_age: float | None = None) -> Path | None:
        entry = self.root / key
        marker = entry / "complete"
        if not marker.exists():
            return None
        if max_age is not None and time.time() - marker.stat().st_mtime > max_age:
            return None
        cacheuse.touch(entry)  # used now (trimming removes the least recently used first)
        return entry

    def layer(self, key: str) -> Path | None:
        """The saved install of this set on this image state (a directory a testbed stacks), if any."""
        path = self.root / "layers" / key
        if not path.is_dir():
            return None
        cacheuse.touch(path)
        return path

    def put_layer(self, key: str, testbed: Testbed) -> None:
        """Save what the testbed wrote since its reset (the install) as this set's layer."""
        testbed.export_layer(self.root / "layers" / key, LAYER_EXCLUDE)

    def put(self, key: str, testbed: Testbed, source: str = APT_DIR) -> None:
        """Keep what the testbed's ``source`` directory (its private apt directory) holds now."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}"
        try:
            if (self.root / key).exists():
                shutil.rmtree(self.root / key, ignore_errors=True)  # stale: replaced
            testbed.copy_out(source, tmp / "apt")
            shutil.rmtree(tmp / "apt" / "archives" / "partial", ignore_errors=True)
            shutil.rmtree(tmp / "apt" / "lists" / "partial", ignore_errors=True)
            (tmp / "complete").write_text("")
            with contextlib.suppress(OSError):  # another worker stored the same set first
                os.rename(tmp, self.root / key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _reach(testbed: Testbed) -> bool:
    """Whether the testbed's commands reach an archive: through its archive proxy or the network
    (decided when it was made, from the test's needs)."""
    caps = testbed.capabilities()
    return ARCHIVE in caps or NETWORK in caps


def ensure_lists(testbed: Testbed, cache: DependencyCache | None) -> bytes:
    """The testbed's apt package lists, as autopkgtest's ``apt-get update`` leaves them: from the
    cache when this image's sources were updated recently, else with ``apt-get update``."""
    if not _reach(testbed):
        return b""
    probe = testbed.exec(["sh", "-c", "ls /var/lib/apt/lists/ | grep -q _Packages && echo present; "
                          "cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | sha256sum; "
                          "dpkg --print-architecture"], timeout=120)
    state = probe.stdout.decode()
    if state.startswith("present"):
        return b""
    key = "lists-" + hashlib.sha256(state.encode()).hexdigest()
    hit = cache.get(key, max_age=LISTS_MAX_AGE) if cache is not None else None
    if hit is not None:
        testbed.copy_in(hit / "apt", "/var/lib/apt/lists")
        return f"# apt package lists from the cache ({key[6:18]})\n".encode()
    r = _apt(testbed, "apt-get update -qq")
    log = format_log("# apt-get update (package lists for the test)", r.stdout, r.stderr)
    if r.exit_code == 0 and cache is not None:
        cache.put(key, testbed, "/var/lib/apt/lists")
    return log


def install(testbed: Testbed, packages: Sequence[str], *, recommends: bool, cache: DependencyCache | None,
            not_installable: Verdict) -> tuple[Outcome | None, bytes]:
    """Install ``packages``; None when they are in, else the outcome to report.
    The second value is a log of what was done (cache hit or not)."""
    names = " ".join(shlex.quote(p) for p in packages)
    rec = "" if recommends else "--no-install-recommends"
    prepare = f"mkdir -p {APT_DIR}/lists/partial {APT_DIR}/archives/partial"
    key = None
    layers = cache is not None and testbed.supports_layers
    if cache is not None:
        if layers:
            testbed.reset()  # from the image itself: the install will be all that the layer holds
        probe = testbed.exec(["sh", "-c", STATE_PROBE], timeout=120)
        key = cache.key(probe.stdout.decode(), packages, recommends)
        layer = cache.layer(key) if layers else None
        if layer is not None:
            testbed.reset(layer)
            return None, f"# test dependencies from a saved layer ({key[:12]}): {' '.join(packages)}\n".encode()
        hit = cache.get(key)
        if hit is not None:
            testbed.copy_in(hit / "apt", APT_DIR)
            r = _apt(testbed, f"{prepare}; apt-get install -y -qq --no-download {APT_OPTS} {rec} {names}")
            log = format_log(f"# test dependencies from the cache ({key[:12]}): {' '.join(packages)}",
                             r.stdout, r.stderr)
            if r.exit_code == 0:
                if layers:
                    cache.put_layer(key, testbed)
                return None, log
    if not _reach(testbed):
        why = f"dependencies not installed and the testbed has no network: {', '.join(packages)}"
        return Outcome(not_installable, why), b""
    r = _apt(testbed, f"{prepare}; apt-get update -qq {APT_OPTS} && "
             f"apt-get install -y -qq {APT_OPTS} {rec} {names}")
    log = format_log(f"# installing test dependencies: {' '.join(packages)}", r.stdout, r.stderr)
    if r.exit_code != 0:
        return Outcome(not_installable, f"dependencies not installable: {', '.join(packages)}", r.exit_code, log), log
    if cache is not None and key is not None:
        cache.put(key, testbed)
        if layers:
            cache.put_layer(key, testbed)
    return None, log


def _apt(testbed: Testbed, script: str) -> ExecResult:
    return testbed.exec(["sh", "-c", f"export DEBIAN_FRONTEND=noninteractive; {script}"], timeout=1200)
