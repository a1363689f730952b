"""Benchmark: the dashboard's version page on a catalog of 1,000,000 attempts
(SQLite, the embedded default), for a version with a 300-test × 4-testbed
matrix whose gate requires every pair.

`imageci serve` runs for real on 127.0.0.1; each request's server time is its
``Server-Timing`` header (the work before the response's first byte), p50 of
several requests after one warm-up. Side by side on the same version in the
same run: the API's JSON of the same attempts (``/api/v1/images/REF/results``),
the peer a script would read instead of the page.

Target (issue 13): version page p50 ≤ 100 ms server time.
Last line: `dashboard (1M attempts): version page X ms p50 server time (300 tests × 4 testbeds, gate
evaluated), results JSON Y ms; the page costs Rx the JSON`.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct, sized  # noqa: E402

from imageci.checks.suite import suite_checks  # noqa: E402
from imageci.config import Settings  # noqa: E402
from imageci.definitions.suite import load_suite  # noqa: E402
from imageci.store.blobs import BlobStore  # noqa: E402
from imageci.store.catalog import Catalog, NewArtifact  # noqa: E402
from imageci.store.models import SUITE  # noqa: E402
from imageci.store.reading import SQLITE_TIME  # noqa: E402
from imageci.store.snapshots import pack_tree  # noqa: E402

NAME = "scale"
TESTBEDS = ("sandbox", "podman", "qemu", "lxd")
DEFINITION = ("name: scale\nsuite: bookworm\ntests:\n  suite: suite\n  gate:\n    tests: all\n"
              f"    testbeds: [{', '.join(TESTBEDS)}]\n")
INSERT = ("INSERT INTO attempts (run_id, image_digest, test_id, test_digest, testbed, attempt, started_at, ended_at, "
          "exit_code, verdict, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?)")


def seed(home: Path, attempts: int, tests: int) -> str:
    """``attempts`` over as many versions as it takes, each with one run of ``tests`` × 4 testbeds (2% retried
    after a failure, 1% failing); returns the middle version's ref."""
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
    digests = {c.id: c.digest for c in suite_checks(load_suite(suite))}
    versions = attempts // (tests * len(TESTBEDS)) + 1
    refs = []
    for v in range(versions):
        digest = f"{v:064x}"
        version = catalog.register_version(NAME, digest, [NewArtifact("rootfs", "rootfs.tar", digest, 1 << 20),
                                                          NewArtifact(SUITE, "suite.tar", snap.digest, snap.size)],
                                           input_hash=None, definition=DEFINITION, build_info={"builder": "bench"})
        refs.append(f"{NAME}@{version.serial}")
    catalog.set_product(NAME, public=True)  # read anonymously, as a public product's readers do
    catalog.close()
    rng = random.Random(13)
    db = sqlite3.connect(home / "catalog.db")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows: list[tuple[object, ...]] = []
    made = 0
    for v in range(versions):
        digest = f"{v:064x}"
        when = (start + timedelta(minutes=v)).strftime(SQLITE_TIME)
        db.execute("INSERT INTO runs (id, image_digest, version_id, started_at, ended_at, options, exit_code, actor, "
                   "status) VALUES (?, ?, ?, ?, ?, '{}', 0, 'bench', 'finished')", (v + 1, digest, v + 1, when, when))
        for t in range(tests):
            tid = f"t{t:03d}"
            for bed in TESTBEDS:
                if made >= attempts:
                    break
                roll = rng.random()
                tries = ("fail", "pass") if roll < 0.02 else (("fail",) if roll < 0.03 else ("pass",))
                for n, verdict in enumerate(tries, start=1):
                    rows.append((v + 1, digest, tid, digests[tid], bed, n, when, when, 0, verdict, ""))
                    made += 1
        if len(rows) > 50_000:
            db.executemany(INSERT, rows)
            rows = []
    if rows:
        db.executemany(INSERT, rows)
    db.commit()
    db.execute("ANALYZE")
    count = db.execute("SELECT COUNT(*) FROM attempts").fetchone()[0]
    db.close()
    print(f"seeded {count} attempts over {versions} versions", flush=True)
    return refs[versions // 2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_ms(client: httpx.Client, path: str, n: int, headers: dict[str, str]) -> tuple[float, int]:
    """p50 of the server time of ``n`` GETs of ``path`` (after one warm-up); the size of the last answer."""
    first = client.get(path, headers=headers)
    if first.status_code != 200:
        raise SystemExit(f"{path}: {first.status_code} {first.text[:500]}")
    times, size = [], 0
    for _ in range(n):
        r = client.get(path, headers=headers)
        times.append(float(r.headers["server-timing"].split("dur=")[1]))
        size = len(r.content)
    return pct(times, 50), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attempts", type=int, default=sized(1_000_000, 2_000))
    parser.add_argument("--tests", type=int, default=sized(300, 10))
    parser.add_argument("-n", type=int, default=sized(25, 2), help="requests per figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        ref = seed(home, args.attempts, args.tests)
        port = _port()
        env = {**os.environ, "IMAGECI_HOME": str(home)}
        env.pop("IMAGECI_DB_URL", None)
        proc = subprocess.Popen([sys.executable, "-m", "imageci.cli", "serve", "--listen", f"127.0.0.1:{port}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if client.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("the server did not start")
                    time.sleep(0.2)
                page, page_size = server_ms(client, f"/versions/{ref}", args.n, {"Accept": "text/html"})
                assert b"matrix" in client.get(f"/versions/{ref}").content
                data, data_size = server_ms(client, f"/api/v1/images/{ref}/results", args.n, {})
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"version page: {page_size / 1024:.0f} KiB of HTML; results JSON: {data_size / 1024:.0f} KiB")
    print(f"dashboard ({args.attempts // 1000}k attempts): version page {page:.0f} ms p50 server time "
          f"({args.tests} tests × {len(TESTBEDS)} testbeds, gate evaluated), results JSON {data:.0f} ms; "
          f"the page costs {page / data:.1f}x the JSON")


if __name__ == "__main__":
    main()
