"""Benchmark: `imageci bisect` on the corpus of tests/bisectkit.py (busybox images whose dpkg database holds N
small packages), on the sandbox, against the peer every CI offers today: a binary search over the changes in
order, each step the good image with a prefix of them (what `git bisect` does over an ordering), on the same
intermediate images and the same runs. Four deterministic cases: one culprit of N, one of N/4, a pair that
breaks only together, a file outside packages. Then the cost of one intermediate image of the example image
(examples/debian-bookworm-minimal: its tree with one package taken from a copy) against unpacking its rootfs.

Last line: `bisect (N=200): culprit right in 4/4 cases (binary search 3/4); 21 test runs for one culprit
(bound 25.3) in 30.1 s; an intermediate of the example image 0.6 s (unpacking it 2.9 s)`.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import built_example, fresh_home, sized  # noqa: E402

from imageci.app import bisect as app_bisect  # noqa: E402
from imageci.app.bisect import BisectArgs, Bisection, run_bisect  # noqa: E402
from imageci.app.session import Session  # noqa: E402
from imageci.build.intermediate import Move, synthesize  # noqa: E402
from imageci.formats.rootfs import unpacked_rootfs  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402

from bisectkit import WORKS, Pkg, image, many, upgraded  # noqa: E402

REPEAT = sized(3, 1)  # runs of each end and of each confirmation
Case = tuple[str, dict[str, Pkg], dict[str, Pkg], dict[str, bytes], dict[str, bytes], list[str]]


def cases(n: int) -> list[Case]:
    """(name, good packages, bad packages, good files, bad files, the culprits)."""
    big, small = many(n), many(max(4, n // 4))
    pair = many(max(4, n // 4)) | {"pair-a": Pkg("1.0-1"), "pair-b": Pkg("1.0-1")}
    broken_pair = upgraded(pair) | {"pair-a": Pkg("2.0-1", status="ok mode-new"),
                                    "pair-b": Pkg("2.0-1", status="ok impl-2")}
    culprit = f"pkg{(n * 2) // 3:03d}"
    return [("one", big, upgraded(big, breaks=culprit), {}, {}, [culprit]),
            ("quarter", small, upgraded(small, breaks="pkg001"), {}, {}, ["pkg001"]),
            ("pair", pair, broken_pair, {}, {}, ["pair-a", "pair-b"]),
            ("files", small, upgraded(small), {"etc/app.conf": b"good\n"}, {"etc/app.conf": b"bad\n"}, ["files"])]


def _cli(home: Path, *args: str) -> None:
    env = dict(os.environ, IMAGECI_HOME=str(home), IMAGECI_DB_URL=f"sqlite:///{home / 'catalog.db'}")
    done = subprocess.run([sys.executable, "-m", "imageci.cli", *args], env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"imageci {' '.join(args)}: {done.stderr[-2000:]}")


def _binary(session: Session, args: BisectArgs) -> tuple[list[str], int]:
    """The peer: the smallest prefix of the changes (in the diff's order) whose intermediate fails."""
    t = app_bisect.target(session, args)
    b = Bisection(session, t)
    app_bisect._ends(b)
    moves = app_bisect._moves(session, t.good, t.bad)
    lo, hi = 0, len(moves) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if b.intermediates([moves[:mid + 1]], "peer")[0] == "fail":
            hi = mid
        else:
            lo = mid + 1
    return [moves[lo].name or moves[lo].key], b.runner.runs


def bisect_corpus(n: int) -> tuple[int, int, int, float, int]:
    """(ours right, peer right, our runs for one of N, our seconds for it, the peer's runs for it)."""
    settings, catalog, _store = fresh_home("bisect", cache=False)
    catalog.close()
    work = Path(tempfile.mkdtemp(prefix="imageci-bench-bisect-corpus-"))
    ours = peer = runs = peer_runs = 0
    seconds = 0.0
    try:
        suite = work / "suite"
        suite.mkdir()
        (suite / "works").write_text(WORKS)
        (suite / "works").chmod(0o755)
        session = Session.open(settings)
        for name, good, bad, good_files, bad_files, culprits in cases(n):
            for i, (pkgs, files) in enumerate(((good, good_files), (bad, bad_files))):
                _cli(settings.home, "import", name, str(image(work / f"{name}-{i}.tar", pkgs, files)), "--suite",
                     str(suite))
            first = sorted(v.serial for v in session.catalog.versions(name))
            _cli(settings.home, "test", f"{name}@{first[0]}")
            args = BisectArgs(ref=f"{name}@{first[1]}", test="works", jobs=1, repeat=REPEAT)
            started = time.monotonic()
            result = run_bisect(session, args)
            took = time.monotonic() - started
            found = sorted(c.package or c.key for c in result.culprits)
            ours += found == sorted(culprits)
            named, their_runs = _binary(session, args)
            peer += named == culprits
            if name == "one":
                runs, seconds, peer_runs = result.test_runs, took, their_runs
            print(f"{name:8}: {', '.join(found) or result.finding} ({result.test_runs} test runs, {took:.1f} s); "
                  f"binary search: {', '.join(named)} ({their_runs} test runs)")
        session.close()
    finally:
        safe_rmtree(work)
        safe_rmtree(settings.home)
    return ours, peer, runs, seconds, peer_runs


def synthesis() -> tuple[float, float]:
    """(seconds for one intermediate of the example image, seconds to unpack its rootfs)."""
    settings, catalog, store = fresh_home("synth")
    try:
        version = built_example(settings, catalog, store)
        rootfs = next(a for a in version.artifacts if a.kind == "rootfs")
        cache = settings.rootfs_cache
        good = unpacked_rootfs(store.path(rootfs.digest), rootfs.digest, cache)
        bad = cache / ("b" * 64)  # a copy with one package changed: the bad end
        subprocess.run(["cp", "-a", str(good), str(bad)], check=True)
        (cache / f"{'b' * 64}.complete").touch()
        listed = (bad / "var/lib/dpkg/info/base-files.list").read_text().split()
        for path in (p for p in listed if (bad / p.lstrip("/")).is_file() and not (bad / p.lstrip("/")).is_symlink()):
            with open(bad / path.lstrip("/"), "ab") as fh:
                fh.write(b"\n")
        started = time.monotonic()
        synthesize(cache, rootfs.digest, "b" * 64, [Move("deb:base-files:amd64", "base-files", "amd64", "12", "13")])
        made = time.monotonic() - started
        target = Path(tempfile.mkdtemp(prefix="imageci-bench-unpack-"))
        started = time.monotonic()
        subprocess.run(["tar", "-C", str(target), "-xf", str(store.path(rootfs.digest))], check=True)
        unpack = time.monotonic() - started
        shutil.rmtree(target)
        return made, unpack
    finally:
        catalog.close()
        safe_rmtree(settings.home)


def main() -> None:
    n = sized(200, 20)
    ours, peer, runs, seconds, peer_runs = bisect_corpus(n)
    made, unpack = synthesis()
    bound = 2 * math.log2(n) + 2 * REPEAT + 4
    print(f"bisect (N={n}): culprit right in {ours}/4 cases (binary search {peer}/4); {runs} test runs for one "
          f"culprit (bound {bound:.1f}; binary search {peer_runs}) in {seconds:.1f} s; an intermediate of the "
          f"example image {made:.2f} s (unpacking it {unpack:.2f} s)")


if __name__ == "__main__":
    main()
