"""Benchmark: one trivial test as a person types it, `imageci run REF TEST`, the whole process (interpreter start,
imports, catalog, testbed, record), against what the tools it wraps take for the same work, in the same run:

* sandbox: `imageci run REF trivial --rerun-all` vs the floor `imageci --version` + bare `bwrap … true` on the
  same unpacked rootfs (goal ≤ 2×);
* already passed: `imageci run REF trivial` when that test passed on these bytes before (nothing runs) vs
  `imageci --version` (goal ≤ 1.5×);
* podman: `imageci run REF trivial --testbed podman --rerun-all` vs `podman run --rm IMAGE true` on the same
  image, in a store of its own at a short path (see ``main``) (goal ≤ 2×).

Each figure is the median of several fresh processes. Where the time goes: `--profile` writes each command's
cProfile (`*.prof`) and `-X importtime` log into the directory it names.

Last line: `one test (whole process): sandbox X s (ratio A, goal ≤ 2), already passed Y s (ratio B, goal ≤ 1.5),
podman Z s (ratio C, goal ≤ 2)`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import built_example, bwrap_floor_argv, fresh_home, sized  # noqa: E402

from imageci.engine.runner import Engine  # noqa: E402
from imageci.formats.rootfs import unpacked_rootfs  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds.podman import PodmanBackend  # noqa: E402
from imageci.testbeds.podmanstore import ImageStore, podman_path, runtime_flags  # noqa: E402

IMAGECI = [sys.executable, "-m", "imageci.cli"]


def median_of(argv: Sequence[str], env: dict[str, str], n: int, ok: tuple[int, ...] = (0,)) -> float:
    """Median seconds of ``argv`` run ``n`` times, each a fresh process (after one warm-up run)."""
    walls = []
    for i in range(n + 1):
        t = time.monotonic()
        done = subprocess.run(list(argv), env=env, capture_output=True, text=True)
        if i:
            walls.append(time.monotonic() - t)
        if done.returncode not in ok:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    return statistics.median(walls)


def profile(argv: Sequence[str], env: dict[str, str], out: Path, name: str) -> None:
    """``argv`` (an imageci command) once under cProfile and once under ``-X importtime``, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    args = list(argv[len(IMAGECI):])
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out / f"{name}.prof"), "-m", "imageci.cli", *args],
                   env=env, capture_output=True, check=False)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "imageci.cli", *args], env=env,
                          capture_output=True, text=True, check=False)
    (out / f"{name}.importtime").write_text(done.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=sized(9, 1), help="processes per figure")
    ap.add_argument("--profile", type=Path, help="write each command's cProfile and import times here")
    args = ap.parse_args()
    settings, catalog, store = fresh_home("one-test")
    short_root = Path(tempfile.mkdtemp(prefix="icb-", dir="/var/tmp"))
    try:
        version = built_example(settings, catalog, store)
        handle = Engine(catalog, store, {}).image_handle(version)
        lower = unpacked_rootfs(handle.rootfs_tar, handle.digest, settings.rootfs_cache)
        # the floor's own store, at a short path: the exit command podman gives conmon (`podman container cleanup
        # --runroot …`) refuses a run root over 50 characters (the home's store keeps its own under the home, a
        # long path here), the container's exit is then never recorded and `podman run --rm` waits out conmon's
        # 20-second timeout; imageci's testbeds (`run -d`, `exec`, `rm -f`) wait for no such record
        PodmanBackend(settings.home, settings.rootfs_cache).store.ensure(handle)
        floor_store = ImageStore(short_root)
        tag = floor_store.ensure(handle)
        podman_env = floor_store.env()
        catalog.close()
        suite = settings.home / "suite"
        suite.mkdir()
        (suite / "trivial.sh").write_text("#!/bin/sh\n# a trivial test\ntrue\n")
        (suite / "trivial.sh").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
        env.update(IMAGECI_HOME=str(settings.home), IMAGECI_BUILD_CACHE=str(settings.build_cache))
        ref = version.product.name
        run = [*IMAGECI, "run", ref, "trivial", "--suite", str(suite)]
        commands = {"sandbox": [*run, "--rerun-all"], "passed": run,
                    "podman": [*run, "--testbed", "podman", "--rerun-all"]}
        version_s = median_of([*IMAGECI, "--version"], env, args.n)
        bwrap_s = median_of([shutil.which("bwrap") or "bwrap", *bwrap_floor_argv(lower)], env, args.n)
        podman_s = median_of([podman_path(), "run", "--rm", *runtime_flags(), "--network", "none", tag, "true"],
                             podman_env, args.n)
        ours = {name: median_of(argv, env, args.n) for name, argv in commands.items()}
        if args.profile:
            for name, argv in commands.items():
                profile(argv, env, args.profile, name)
        floors = {"sandbox": version_s + bwrap_s, "passed": version_s, "podman": podman_s}
        ratio = {k: ours[k] / floors[k] for k in ours}
        print(f"imageci --version       : {version_s:.3f} s; bare bwrap … true {bwrap_s * 1000:.1f} ms; "
              f"podman run --rm IMAGE true {podman_s:.3f} s")
        print(f"run, sandbox            : {ours['sandbox']:.3f} s (floor {floors['sandbox']:.3f} s, ratio "
              f"{ratio['sandbox']:.2f})")
        print(f"run, already passed     : {ours['passed']:.3f} s (floor {floors['passed']:.3f} s, ratio "
              f"{ratio['passed']:.2f})")
        print(f"run, podman             : {ours['podman']:.3f} s (floor {floors['podman']:.3f} s, ratio "
              f"{ratio['podman']:.2f})")
        print(f"one test (whole process): sandbox {ours['sandbox']:.2f} s (ratio {ratio['sandbox']:.2f}, goal ≤ 2), "
              f"already passed {ours['passed']:.2f} s (ratio {ratio['passed']:.2f}, goal ≤ 1.5), podman "
              f"{ours['podman']:.2f} s (ratio {ratio['podman']:.2f}, goal ≤ 2)")
    finally:
        catalog.close()
        safe_rmtree(settings.home)
        safe_rmtree(short_root)


if __name__ == "__main__":
    main()
