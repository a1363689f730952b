"""Benchmark: debugging where it failed (issue 35), per testbed.

1. Hold: from the end of a failed test to the command that enters its testbed. ``imageci run REF fails
   --testbed T --hold-on-failure`` as a person runs it; the time between the line that reports the failure
   and the line that prints ``imageci attach ID``, both stamped as the process writes them (goal: under 1 s
   for the sandbox, podman and LXD, under 3 s for a VM restored from its snapshot). The holder is released
   after each.
2. The machine's own complaints around every test: the example suite on each testbed with them read (the
   default) and with ``checks: {read: false}``, interleaved, best of N; their cost per test and as a share of
   the suite's wall time (goal: at most 5 %).

The sandbox and podman run the minimal example; LXD and qemu the VM example (LXD boots an init, which the
minimal image lacks). Quick mode (CI: that the benchmark runs, its figures mean nothing) leaves the VM out (a
cold boot under TCG is a minute and a half; tests/test_qemu.py holds, enters and reads the complaints of
VMs), runs LXD on a busybox image (bench/lxd_fresh_instance.py's) and three tests once each.

Last line: ``debugging: hold → command W s at worst (T), goal 1 s (3 s for a VM); around-test checks C %
of the suite at worst (T), goal 5 %``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import QUICK, REPO, built_example, fresh_home, sized  # noqa: E402
from lxd_fresh_instance import busybox_tar  # noqa: E402

from imageci.build.service import build_image  # noqa: E402
from imageci.checks.base import Check  # noqa: E402
from imageci.checks.script import ScriptCheck  # noqa: E402
from imageci.config import Settings  # noqa: E402
from imageci.definitions.image import load_definition  # noqa: E402
from imageci.definitions.suite import load_suite  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.store.models import Version, label  # noqa: E402
from imageci.testbeds.base import Backend  # noqa: E402
from imageci.testbeds.registry import make_backend  # noqa: E402
from imageci.testbeds.vm.qemu import QemuBackend  # noqa: E402

VM_DEF = REPO / "examples" / "debian-bookworm-vm" / "image.yaml"
GOAL_S = {"qemu": 3.0}
HELD = re.compile(r"held fails \[\w+\] until \S+: enter it with imageci attach (\d+) ")


def hold_latency(settings: Settings, version: Version, testbed: str, suite: Path) -> float:
    """Seconds from the failure's line to the hold's line, as `imageci run` writes them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")} | {"IMAGECI_HOME": str(settings.home)}
    proc = subprocess.Popen([sys.executable, "-m", "imageci.cli", "run", label(version), "fails", "--suite",
                             str(suite), "--testbed", testbed, "--rerun-all", "--hold-on-failure=10m"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert proc.stdout is not None
    failed = held = 0.0
    hold = ""
    for line in proc.stdout:
        if " fails [" in line and line.strip().startswith("fail"):
            failed = time.perf_counter()
        elif (m := HELD.search(line)) is not None:
            held, hold = time.perf_counter(), m.group(1)
    assert proc.wait() == 1 and failed and held, f"{testbed}: no failure or no hold printed"
    subprocess.run([sys.executable, "-m", "imageci.cli", "release", hold], env=env, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    return held - failed


def suite_seconds(engine: Engine, version: Version, checks: list[Check], testbed: str, read: bool) -> float:
    engine.complaints = read
    started = time.perf_counter()
    report = engine.run(version, checks, [testbed], rerun_all=True)
    assert report.results, "the suite ran nothing"
    return time.perf_counter() - started


def complaint_cost(engine: Engine, version: Version, suite: Path, testbed: str, rounds: int) -> tuple[float, float]:
    """(share of the suite's wall time, seconds per test) the complaints add on ``testbed``."""
    every = load_suite(suite).tests
    checks: list[Check] = [ScriptCheck(s) for s in every[:sized(len(every), 3)]]
    if not QUICK:
        suite_seconds(engine, version, checks, testbed, read=True)  # warm: rootfs unpacked, image pulled, VM booted
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):
        off.append(suite_seconds(engine, version, checks, testbed, read=False))
        on.append(suite_seconds(engine, version, checks, testbed, read=True))
    extra = max(0.0, min(on) - min(off))
    return extra / min(off), extra / len(checks)


def main() -> None:
    settings, catalog, store = fresh_home("debugging")
    minimal = built_example(settings, catalog, store)
    if QUICK:  # an image with an init for LXD, in a second: busybox (its "suite": a trivial test)
        tar = busybox_tar(settings.home)
        home = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
        home["IMAGECI_HOME"] = str(settings.home)
        subprocess.run([sys.executable, "-m", "imageci.cli", "import", "busybox", str(tar)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, env=home)
        vm = catalog.versions("busybox")[0]
        trivial = settings.home / "trivial-suite"
        trivial.mkdir()
        for n in range(3):
            (trivial / f"t{n}.sh").write_text("#!/bin/sh\ntest -d /tmp\n")
            (trivial / f"t{n}.sh").chmod(0o755)
    else:
        vm = build_image(load_definition(VM_DEF), settings, catalog, store).version
    failing = settings.home / "failing-suite"
    failing.mkdir()
    (failing / "fails.sh").write_text("#!/bin/sh\necho 'what the test saw' > /tmp/evidence\nexit 1\n")
    (failing / "fails.sh").chmod(0o755)
    beds: dict[str, tuple[Version, Path]] = {
        "sandbox": (minimal, REPO / "examples" / "debian-bookworm-minimal" / "suite"),
        "podman": (minimal, REPO / "examples" / "debian-bookworm-minimal" / "suite"),
        "lxd": (vm, settings.home / "trivial-suite" if QUICK else VM_DEF.parent / "suite")}
    if not QUICK:
        beds["qemu"] = (vm, VM_DEF.parent / "suite")
    latency: dict[str, float] = {}
    cost: dict[str, tuple[float, float]] = {}
    try:
        for testbed, (version, suite) in beds.items():
            latency[testbed] = hold_latency(settings, version, testbed, failing)
            backend: Backend = QemuBackend(settings.home, settings.rootfs_cache, keep_warm=True) \
                if testbed == "qemu" else make_backend(testbed, settings)
            engine = Engine(catalog, store, {testbed: backend}, jobs=1)
            try:
                cost[testbed] = complaint_cost(engine, version, suite, testbed, sized(2, 1))
            finally:
                backend.finish()
                if isinstance(backend, QemuBackend):
                    backend.shutdown()
            print(f"{testbed}: hold → command {latency[testbed]:.2f} s; around-test checks "
                  f"{cost[testbed][0] * 100:.1f} % of the suite, {cost[testbed][1] * 1000:.0f} ms per test", flush=True)
    finally:
        catalog.close()
        shutil.rmtree(settings.home, ignore_errors=True)
    worst_hold = max(latency, key=lambda t: latency[t] / GOAL_S.get(t, 1.0))
    worst_cost = max(cost, key=lambda t: cost[t][0])
    print(f"debugging: hold → command {latency[worst_hold]:.2f} s at worst ({worst_hold}), goal 1 s (3 s for a VM); "
          f"around-test checks {cost[worst_cost][0] * 100:.1f} % of the suite at worst ({worst_cost}), goal 5 %")


if __name__ == "__main__":
    main()
