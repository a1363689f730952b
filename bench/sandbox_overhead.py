"""Benchmark: 200 trivial tests, each in a fresh sandbox, through the whole
engine (catalog writes and log blobs included), against the physical floor:
plain `bwrap ... true` on the same unpacked rootfs, at the same concurrency.
The same tests with `needs: [privileged]` (no capability drop, no seccomp
filter, no /proc masking) show what the hardening costs per test.

Last line: `sandbox: X tests/s (floor: bwrap Y/s, ratio Z, goal ≥ 0.5; hardening +H% per test)`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import built_example, bwrap_floor_argv, fresh_home, pct, sized  # noqa: E402

from imageci.checks.script import ScriptCheck  # noqa: E402
from imageci.definitions.suite import load_suite  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.formats.rootfs import unpacked_rootfs  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds.registry import make_backend  # noqa: E402


def _bwrap_floor(lower: Path, n: int, jobs: int) -> tuple[list[float], float]:
    """The floor: bwrap alone, same rootfs, same namespaces, same concurrency; each run's time and the wall."""
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [bwrap, *bwrap_floor_argv(lower)]

    def one_bwrap(_: int) -> float:
        t = time.monotonic()
        subprocess.run(argv, check=True)
        return time.monotonic() - t

    with ThreadPoolExecutor(jobs) as pool:
        t0 = time.monotonic()
        times = list(pool.map(one_bwrap, range(n)))
        return times, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=sized(200, 4))
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    settings, catalog, store = fresh_home("sandbox")
    try:
        version = built_example(settings, catalog, store)
        engine = Engine(catalog, store, {"sandbox": make_backend("sandbox", settings)}, jobs=args.j)
        handle = engine.image_handle(version)
        lower = unpacked_rootfs(handle.rootfs_tar, handle.digest, settings.rootfs_cache)

        suite = settings.home / "suite"
        suite.mkdir()
        for i in range(args.n):
            p = suite / f"t{i:03d}.sh"
            p.write_text(f"#!/bin/sh\n# trivial test {i}\ntrue\n")
            p.chmod(0o755)
        checks = [ScriptCheck(s) for s in load_suite(suite).tests]
        (suite / "suite.yaml").write_text("defaults: {needs: [privileged]}\n")
        privileged = [ScriptCheck(s) for s in load_suite(suite).tests]

        floor_times, floor_wall = _bwrap_floor(lower, args.n, args.j)
        t0 = time.monotonic()
        report = engine.run(version, checks, ["sandbox"], rerun_all=True)
        wall = time.monotonic() - t0
        bad = [r for r in report.results if r.verdict != "pass"]
        if bad:
            raise SystemExit(f"benchmark tests did not pass: {bad[0].test_id}: {bad[0].reason}")
        per_test = [(a.ended_at - a.started_at).total_seconds() for r in report.results for a in r.attempts]
        rate, floor_rate = args.n / wall, args.n / floor_wall
        t0 = time.monotonic()
        engine.run(version, privileged, ["sandbox"], rerun_all=True)
        plain_wall = time.monotonic() - t0
        hardening = (wall - plain_wall) / plain_wall * 100
        print(f"tests: {args.n}, jobs: {args.j}")
        print(f"imageci engine : {wall:.2f} s wall, {rate:.1f} tests/s, per-test p50 {pct(per_test, 50) * 1000:.1f} ms"
              f" p95 {pct(per_test, 95) * 1000:.1f} ms (fresh overlay + bwrap + record)")
        print(f"bwrap floor    : {floor_wall:.2f} s wall, {floor_rate:.1f} runs/s, per-run p50 "
              f"{pct(floor_times, 50) * 1000:.1f} ms p95 {pct(floor_times, 95) * 1000:.1f} ms")
        print(f"privileged     : {plain_wall:.2f} s wall, {args.n / plain_wall:.1f} tests/s (the same tests without "
              "capability drop, seccomp and /proc masking)")
        print(f"sandbox: {rate:.1f} tests/s (floor: bwrap {floor_rate:.1f}/s, ratio {rate / floor_rate:.2f}, "
              f"goal ≥ 0.5; hardening {hardening:+.0f}% per test)")
    finally:
        catalog.close()
        safe_rmtree(settings.home)


if __name__ == "__main__":
    main()
