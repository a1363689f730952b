"""Benchmark: the query commands on a catalog seeded with 1,000,000 attempts
over 500 versions (SQLite, the embedded default), 2% of tests flaky.

Two figures per query:
- in process: the application layer's call (``app.queries``, and the gate
  on a version whose stored suite has 100 tests), p50 of several calls: what
  grows with the catalog;
- per command: `imageci <query> --json` as a user runs it, a fresh process
  each time, p50 wall time and peak memory; next to it the floor every
  command pays before any imageci code runs: a bare Typer app with one
  command, on the same Typer and Pydantic, in the same run.

`flaky --since 3650d` reports every transient failure in the catalog
(~19,500 here), so its output is large by construction.

The peer is the approach this replaced, side by side on the same catalog:
loading every attempt since the cutoff into Python and grouping there (what
`flaky` did before the database did the finding).

Targets (issue 9): ≤ 300 ms p50 each on a warm machine, ≤ 200 MB; (issue 36) each command ≤ 1.5× the bare
Typer app.
Last line: `queries (1M attempts): in process results X ms, flaky Y ms, gate Z ms, images W ms p50;
commands results …, flaky …, images …, events …, gate … ms p50 (a bare Typer app: F ms; ratios …, goal ≤ 1.5
each); peak N MB; flaky Rx faster than loading every attempt`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct, sized  # noqa: E402

from imageci.config import Settings  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.store import lookups  # noqa: E402
from imageci.store.blobs import BlobStore  # noqa: E402
from imageci.store.catalog import Catalog, NewArtifact  # noqa: E402
from imageci.store.models import SUITE  # noqa: E402
from imageci.store.reading import SQLITE_TIME, SqliteReader  # noqa: E402
from imageci.store.snapshots import pack_tree  # noqa: E402

NAME = "scale"
DEFINITION = ("name: scale\nsuite: bookworm\ntests:\n  suite: suite\n  gate:\n    tests: all\n"
              "    testbeds: [sandbox]\n")
BARE_TYPER = """
from typing import Annotated
import typer
app = typer.Typer()
@app.command()
def images(name: Annotated[str | None, typer.Argument()] = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    print("[]")
@app.command()
def other() -> None:
    pass
app()
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
    rows: list[tuple[object, ...]] = []
    for v in range(versions):
        digest = f"{v:064x}"
        made = 0
        while made < per_version:
            run_id += 1
            when = (start + timedelta(minutes=run_id)).strftime(SQLITE_TIME)  # as SQLAlchemy stores it
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


# Runs `-m MODULE ARGS…` or `-c CODE ARGS…` and writes the process's own peak RSS (VmHWM, which starts
# afresh at exec: ru_maxrss from wait4 would count the forking bench's memory) to $BENCH_HWM.
MEASURED = """
import atexit, os, runpy, sys
def hwm():
    with open('/proc/self/status') as fh:
        kb = next(int(line.split()[1]) for line in fh if line.startswith('VmHWM:'))
    with open(os.environ['BENCH_HWM'], 'w') as out:
        out.write(str(kb))
atexit.register(hwm)
how, what, *rest = sys.argv[1:]
if how == '-m':
    sys.argv = [what, *rest]
    runpy.run_module(what, run_name='__main__', alter_sys=True)
else:
    sys.argv = ['-c', *rest]
    exec(compile(what, '<bench>', 'exec'), {'__name__': '__main__'})
"""


def timed(argv: list[str], env: dict[str, str], n: int) -> tuple[float, float, str]:
    """p50 seconds and peak RSS (MB) of ``python ARGV`` (``-m MODULE …`` or ``-c CODE …``) run ``n``
    times, each a fresh process; its output."""
    walls, peak, out = [], 0.0, b""
    for _ in range(n):
        with tempfile.TemporaryFile() as fh, tempfile.NamedTemporaryFile() as hwm:
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-c", MEASURED, *argv], env={**env, "BENCH_HWM": hwm.name},
                                  stdout=fh, stderr=subprocess.STDOUT)
            walls.append(time.monotonic() - t0)
            fh.seek(0)
            out = fh.read()
            peak = max(peak, int(Path(hwm.name).read_text() or 0) / 1024)
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed ({proc.returncode}): {out.decode()[-2000:]}")
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


def in_process(home: Path, ref: str, n: int) -> dict[str, float]:
    """p50 seconds of each query operation called in this process (after one warm-up call)."""
    from imageci.app import flakiness, queries
    from imageci.app.gating import gate
    from imageci.app.session import Session

    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=2, build_cache=None)
    session = Session.open(settings)
    version = session.catalog.resolve(ref)
    calls: dict[str, Callable[[], object]] = {"results": lambda: queries.results(session, ref),
             "flaky": lambda: flakiness.flaky(session, None, timedelta(days=3650)),
             "gate": lambda: gate(session, version),
             "images": lambda: queries.images(session)}
    figures = {}
    for label, call in calls.items():
        call()
        walls = []
        for _ in range(n):
            t0 = time.monotonic()
            call()
            walls.append(time.monotonic() - t0)
        figures[label] = pct(walls, 50)
    result = gate(session, version)
    assert result is not None and result.holds, "the seeded version's gate should hold"
    session.close()
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=sized(500, 5))
    ap.add_argument("--tests", type=int, default=sized(100, 5))
    ap.add_argument("--attempts", type=int, default=sized(1_000_000, 500), help="in all")
    ap.add_argument("-n", type=int, default=sized(5, 1), help="runs per command")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="imageci-bench-queries-"))
    atexit.register(safe_rmtree, home)  # however the benchmark ends
    t0 = time.monotonic()
    ref, _digest = seed(home, args.versions, args.tests, args.attempts // args.versions)
    print(f"seeded {args.attempts} attempts over {args.versions} versions in {time.monotonic() - t0:.1f}s "
          f"({(home / 'catalog.db').stat().st_size / 1e6:.0f} MB catalog)")
    inside = in_process(home, ref, args.n)
    for label, p50 in inside.items():
        print(f"{label:8} in process p50 {p50 * 1000:7.0f} ms")
    env = {**os.environ, "IMAGECI_HOME": str(home), "COLUMNS": "200"}
    env.pop("IMAGECI_DB_URL", None)
    imageci = ["-m", "imageci.cli"]
    figures = {}
    for label, argv in (("results", [*imageci, "results", ref, "--json"]),
                        ("flaky", [*imageci, "flaky", "--since", "3650d", "--json"]),
                        ("images", [*imageci, "images", "--json"]),
                        ("events", [*imageci, "events", ref]),
                        ("gate", [*imageci, "gate", ref, "--json"])):
        p50, peak, out = timed(argv, env, args.n)
        figures[label] = (p50, peak)
        print(f"imageci {label:8} p50 {p50 * 1000:7.0f} ms  peak {peak:6.0f} MB  ({len(out)} bytes of output)")
    table, _peak, out = timed([*imageci, "flaky", "--since", "3650d"], env, 1)
    print(f"imageci flaky (columns, not JSON): {table * 1000:.0f} ms ({len(out)} bytes)")
    floor, _peak, _ = timed(["-c", BARE_TYPER, "images"], env, args.n)
    version, _peak, _ = timed([*imageci, "--version"], env, args.n)
    print(f"a bare Typer app p50 {floor * 1000:.0f} ms, imageci --version p50 {version * 1000:.0f} ms (the floor)")
    peer, found = loading_everything(f"sqlite:///{home / 'catalog.db'}", datetime(2000, 1, 1, tzinfo=UTC))
    reader = SqliteReader.open(f"sqlite:///{home / 'catalog.db'}")
    assert reader is not None
    ours = len(lookups.transient_failures(reader, None, datetime(2000, 1, 1, tzinfo=UTC)))
    reader.close()
    assert ours == found, (ours, found)
    print(f"flaky in process: {inside['flaky'] * 1000:.0f} ms (the database finds them) vs {peer * 1000:.0f} ms "
          f"(every attempt loaded), {found} transient failures")
    peak = max(p for _t, p in figures.values())
    ms = {k: round(v * 1000) for k, v in inside.items()}
    cmd = {k: round(v[0] * 1000) for k, v in figures.items()}
    ratios = ", ".join(f"{k} {v[0] / floor:.2f}" for k, v in figures.items())
    print(f"queries ({args.attempts} attempts): in process results {ms['results']} ms, flaky {ms['flaky']} ms, "
          f"gate {ms['gate']} ms, images {ms['images']} ms p50; commands results {cmd['results']}, flaky "
          f"{cmd['flaky']}, images {cmd['images']}, events {cmd['events']}, gate {cmd['gate']} ms p50 (a bare Typer "
          f"app: {floor * 1000:.0f} ms; ratios {ratios}, goal ≤ 1.5 each); peak {peak:.0f} MB; flaky "
          f"{peer / max(inside['flaky'], 1e-6):.0f}x faster than loading every attempt")


if __name__ == "__main__":
    main()
