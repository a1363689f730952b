"""Benchmark: the query commands on a catalog seeded with 1,000,000 attempts
over 500 versions (SQLite, the embedded default). Each command runs as a user
runs it — a fresh `imageci` process — several times; we report its p50 wall
time and peak memory. The gate is evaluated the same way, in a process of its
own, on a version whose stored suite has 100 tests.

The peer is the approach this replaced, side by side on the same catalog:
loading every attempt since the cutoff into Python and grouping there (what
`flaky` did before the database did the finding).

Targets (issue 9): ≤ 300 ms p50 each on a warm machine, ≤ 200 MB.
Last line: `queries (1M attempts): results X ms, flaky Y ms, gate Z ms, images W ms p50; peak N MB;
flaky Rx faster than loading every attempt`.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct  # noqa: E402

from imageci.config import Settings  # noqa: E402
from imageci.store.blobs import BlobStore  # noqa: E402
from imageci.store.catalog import Catalog, NewArtifact  # noqa: E402
from imageci.store.models import SUITE  # noqa: E402
from imageci.store.snapshots import pack_tree  # noqa: E402

NAME = "scale"
DEFINITION = ("name: scale\nsuite: bookworm\ntests:\n  suite: suite\n  gate:\n    tests: all\n"
              "    testbeds: [sandbox]\n")
GATE = """
import sys, time, resource
from imageci.app.session import Session
from imageci.app.gating import gate
s = Session.open()
v = s.catalog.resolve(sys.argv[1])
r = gate(s, v)
print(r.holds, len(r.satisfied), len(r.missing))
"""


def seed(home: Path, versions: int, tests: int, per_version: int) -> tuple[str, str]:
    """A catalog with ``versions`` × ``per_version`` attempts; returns (a version ref, its digest)."""
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=2, build_cache=None)
    settings.ensure()
    catalog = Catalog.open(settings.db_url)
    store = BlobStore(settings.store_dir)
    suite = home / "suite-src"
    suite.mkdir()
    for t in range(tests):
        (suite / f"t{t:03d}.sh").write_text(f"#!/bin/sh\n# test {t}\ntrue\n")
        (suite / f"t{t:03d}.sh").chmod(0o755)
    snap = pack_tree(suite, store)
    from imageci.checks.suite import suite_checks
    from imageci.definitions.suite import load_suite

    digests = {c.id: c.digest for c in suite_checks(load_suite(suite))}
    refs = []
    for v in range(versions):
        digest = f"{v:064x}"
        version = catalog.register_version(NAME, digest, [NewArtifact("rootfs", "rootfs.tar", digest, 1 << 20),
                                                          NewArtifact(SUITE, "suite.tar", snap.digest, snap.size)],
                                           input_hash=None, definition=DEFINITION, build_info={})
        refs.append((f"{NAME}@{version.serial}", digest))
    catalog.close()
    rng = random.Random(7)
    db = sqlite3.connect(home / "catalog.db")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    run_id = 0
    rows = []
    for v in range(versions):
        digest = f"{v:064x}"
        made = 0
        while made < per_version:
            run_id += 1
            when = start + timedelta(minutes=run_id)
            db.execute("INSERT INTO runs (id, image_digest, started_at, ended_at, options, exit_code, actor, status) "
                       "VALUES (?, ?, ?, ?, '{}', 0, 'bench', 'finished')", (run_id, digest, when, when))
            for t in range(tests):
                if made >= per_version:
                    break
                tid = f"t{t:03d}"
                flaky = rng.random() < 0.02
                for n, verdict in enumerate(("fail", "pass") if flaky else ("pass",), start=1):
                    rows.append((run_id, digest, tid, digests[tid], "sandbox", n, when, when, 0, verdict, ""))
                    made += 1
            if len(rows) > 50_000:
                db.executemany("INSERT INTO attempts (run_id, image_digest, test_id, test_digest, testbed, attempt, "
                               "started_at, ended_at, exit_code, verdict, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                rows = []
    if rows:
        db.executemany("INSERT INTO attempts (run_id, image_digest, test_id, test_digest, testbed, attempt, "
                       "started_at, ended_at, exit_code, verdict, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return refs[versions // 2]


def timed(argv: list[str], env: dict[str, str], n: int) -> tuple[float, float, str]:
    """p50 seconds and peak RSS (MB) of ``argv`` run ``n`` times, each a fresh process; its output."""
    walls, peak, out = [], 0.0, b""
    for _ in range(n):
        with tempfile.TemporaryFile() as fh:
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)
            _pid, status, usage = os.wait4(proc.pid, 0)
            walls.append(time.monotonic() - t0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            fh.seek(0)
            out = fh.read()
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed ({proc.returncode}): {out.decode()[-2000:]}")
        peak = max(peak, usage.ru_maxrss / 1024)
    return pct(walls, 50), peak, out.decode()


def loading_everything(db_url: str, since: datetime) -> tuple[float, int]:
    """The peer: every attempt since ``since`` loaded as ORM objects and grouped in Python."""
    from sqlalchemy import select

    from imageci.store.models import Attempt, Product, Version

    catalog = Catalog.open(db_url)
    t0 = time.monotonic()
    groups: dict[tuple[str, str, int, str, str], list[str]] = {}
    with catalog.session() as s:
        q = (select(Product.name, Version.serial, Attempt).join(Version, Version.digest == Attempt.image_digest)
             .join(Product, Product.id == Version.product_id).where(Attempt.started_at >= since))
        for p, serial, a in s.execute(q.order_by(Attempt.id)):
            groups.setdefault((p, serial, a.run_id, a.test_id, a.testbed), []).append(a.verdict)
    found = sum(1 for v in groups.values() if "pass" in v and ("fail" in v or "error" in v))
    took = time.monotonic() - t0
    catalog.close()
    return took, found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=500)
    ap.add_argument("--tests", type=int, default=100)
    ap.add_argument("--attempts", type=int, default=1_000_000, help="in all")
    ap.add_argument("-n", type=int, default=5, help="runs per command")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="imageci-bench-queries-"))
    t0 = time.monotonic()
    ref, _digest = seed(home, args.versions, args.tests, args.attempts // args.versions)
    print(f"seeded {args.attempts} attempts over {args.versions} versions in {time.monotonic() - t0:.1f}s "
          f"({(home / 'catalog.db').stat().st_size / 1e6:.0f} MB catalog)")
    env = {**os.environ, "IMAGECI_HOME": str(home), "COLUMNS": "200"}
    imageci = [sys.executable, "-m", "imageci.cli"]
    figures = {}
    for label, argv in (("results", [*imageci, "results", ref, "--json"]),
                        ("flaky", [*imageci, "flaky", "--since", "3650d", "--json"]),
                        ("gate", [sys.executable, "-c", GATE, ref]),
                        ("images", [*imageci, "images", "--json"])):
        p50, peak, out = timed(argv, env, args.n)
        figures[label] = (p50, peak)
        print(f"{label:8} p50 {p50 * 1000:7.0f} ms  peak {peak:6.0f} MB  ({len(out)} bytes of output)")
    floor, _peak, _ = timed([*imageci, "--version"], env, args.n)
    print(f"{'--version':8} p50 {floor * 1000:7.0f} ms  (interpreter + CLI start, the floor)")
    peer, found = loading_everything(f"sqlite:///{home / 'catalog.db'}", datetime(2000, 1, 1, tzinfo=UTC))
    ours_in_process = time.monotonic()
    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}")
    mine = catalog.transient_failures(None, datetime(2000, 1, 1, tzinfo=UTC))
    ours_in_process = time.monotonic() - ours_in_process
    catalog.close()
    assert len(mine) == found, (len(mine), found)
    print(f"flaky in process: {ours_in_process * 1000:.0f} ms (database finds them) vs {peer * 1000:.0f} ms "
          f"(every attempt loaded), {found} transient failures both")
    peak = max(p for _t, p in figures.values())
    ms = {k: round(v[0] * 1000) for k, v in figures.items()}
    print(f"queries ({args.attempts} attempts): results {ms['results']} ms, flaky {ms['flaky']} ms, gate {ms['gate']} "
          f"ms, images {ms['images']} ms p50; peak {peak:.0f} MB; flaky {peer / max(ours_in_process, 1e-6):.0f}x "
          "faster than loading every attempt")


if __name__ == "__main__":
    main()
