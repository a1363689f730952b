"""Benchmark: the DEP-8 suites of gzip, sed and less on the same image, plus
bench/dep8-parity/hello (a suite that exercises @ without udebs, @builddeps@
with build-essential, test-name, ordinary-user tests, the apt archive without
needs-internet and tests started by their absolute path) and bench/dep8-parity/builder
(build-needed: the tree built with dpkg-buildpackage before its test), imageci
(sandbox testbed) vs `autopkgtest -U ... -- unshare --tarball`.

The peer gets the image tarball plus the host's /etc/resolv.conf (the image
ships none, by design; autopkgtest needs the network to install its own
helpers and the tests' dependencies). Verdicts must be identical.

With ``--builddeps``: bzip2, libyaml and json-c, whose DEP-8 tests install a
compiler (build-essential, or gcc + libc-dev + cmake) and -dev packages. imageci
runs them twice on one home: cold (empty caches: the first test of each
dependency set installs it and saves the install as a layer) and warm (every
set comes from its saved layer: nothing is installed); autopkgtest installs
every test's dependencies each time.

`--quick` (what tests/test_dep8_parity.py runs): gzip and the two local trees only.

Last line: `dep8: imageci X s vs autopkgtest Y s (ratio Z), verdicts identical: True`
(with ``--builddeps``: `dep8 builddeps: imageci cold X s, warm W s vs autopkgtest Y s
(ratios A, B), verdicts identical: True`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BUILD_CACHE, QUICK, built_example, fresh_home  # noqa: E402

from imageci.checks.dep8 import dep8_checks  # noqa: E402
from imageci.checks.depcache import DependencyCache  # noqa: E402
from imageci.definitions.dep8 import fetch_source, load_dep8  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds.registry import make_backend  # noqa: E402

PACKAGES = ["gzip", "sed", "less"]
BUILDDEPS = ["bzip2", "libyaml", "json-c"]  # tests that compile against the packages' -dev files
# binaries from the archive (-B); builder's test needs its tree built (build-needed)
LOCAL = [Path(__file__).resolve().parent / "dep8-parity" / name for name in ("hello", "builder")]
PEER_VERDICTS = {"PASS": "pass", "FAIL": "fail", "SKIP": "skip", "FLAKY": "flaky", "NEUTRAL": "pass"}


def peer_tarball(rootfs: Path, dest: Path) -> Path:
    shutil.copyfile(rootfs, dest)
    dest.chmod(0o644)
    with tarfile.open(dest, "a") as tar:
        tar.add(Path("/etc/resolv.conf").resolve(), arcname="./etc/resolv.conf")
    return dest


def autopkgtest(trees: list[Path], tarball: Path, summary: Path) -> dict[str, str]:
    """One autopkgtest run per source package (it takes one at a time); SOURCE/TEST → verdict."""
    verdicts = {}
    for tree in trees:
        source = load_dep8(tree).source
        binaries = ["-B"] if tree in LOCAL else []
        res = subprocess.run(["autopkgtest", "-U", *binaries, "--summary-file", str(summary), f"{tree}/", "--",
                              "unshare", "--tarball", str(tarball)], capture_output=True, text=True)
        if res.returncode not in (0, 2, 4, 8):  # 2: some skipped, 4: some failed, 8: none ran
            raise RuntimeError(f"autopkgtest failed ({res.returncode}): {res.stderr[-1500:]}")
        for line in summary.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] in PEER_VERDICTS:
                verdicts[f"{source}/{parts[0]}"] = PEER_VERDICTS[parts[1]]
    return verdicts


def compare(packages: list[str] | None = None, local: list[Path] | None = None,
            warm: list[float] | None = None) -> tuple[dict[str, str], dict[str, str], float, float]:
    """Verdicts and wall times of both tools; with ``warm`` (a list), imageci runs a second time on
    the same home and that run's time is appended to it (its verdicts must be the same)."""
    settings, catalog, store = fresh_home("dep8")
    try:
        version = built_example(settings, catalog, store)
        trees = [fetch_source(p, BUILD_CACHE.parent / "sources") for p in packages or PACKAGES]
        trees += LOCAL if local is None else local
        engine = Engine(catalog, store, {"sandbox": make_backend("sandbox", settings)}, jobs=2)
        cache = DependencyCache(settings.home / "cache" / "test-deps")  # starts empty, as in a fresh home
        checks = [c for t in trees for c in dep8_checks(load_dep8(t), cache)]
        t0 = time.monotonic()
        report = engine.run(version, checks, ["sandbox"], rerun_all=True)
        ours = time.monotonic() - t0
        mine = {r.test_id: r.verdict.value for r in report.results}
        if warm is not None:
            t0 = time.monotonic()
            again = engine.run(version, checks, ["sandbox"], rerun_all=True)
            warm.append(time.monotonic() - t0)
            assert {r.test_id: r.verdict.value for r in again.results} == mine, "warm verdicts differ"
        with tempfile.TemporaryDirectory() as tmp:
            tarball = peer_tarball(engine.image_handle(version).rootfs_tar, Path(tmp) / "peer.tar")
            t0 = time.monotonic()
            theirs_v = autopkgtest(trees, tarball, Path(tmp) / "summary")
            theirs = time.monotonic() - t0
        return mine, theirs_v, ours, theirs
    finally:
        catalog.close()
        safe_rmtree(settings.home)


def main() -> None:
    if "--builddeps" in sys.argv:
        warm: list[float] = []
        mine, peer, ours, theirs = compare(BUILDDEPS, [], warm)
        print(f"imageci    : cold {ours:.1f} s, warm {warm[0]:.1f} s  {mine}")
        print(f"autopkgtest: {theirs:.1f} s  {peer}")
        print(f"dep8 builddeps: imageci cold {ours:.1f} s, warm {warm[0]:.1f} s vs autopkgtest {theirs:.1f} s "
              f"(ratios {ours / theirs:.3f}, {warm[0] / theirs:.3f}), verdicts identical: {mine == peer}")
        return
    mine, peer, ours, theirs = compare(["gzip"] if QUICK else PACKAGES)  # --quick: tests/test_dep8_parity.py
    print(f"imageci    : {ours:.1f} s  {mine}")
    print(f"autopkgtest: {theirs:.1f} s  {peer}")
    print(f"verdicts: {json.dumps({'imageci': mine, 'autopkgtest': peer}, sort_keys=True)}")
    print(f"dep8: imageci {ours:.1f} s vs autopkgtest {theirs:.1f} s (ratio {ours / theirs:.3f}), "
          f"verdicts identical: {mine == peer}")


if __name__ == "__main__":
    main()
