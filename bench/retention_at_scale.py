"""Benchmark: retention on a catalog of many versions (SQLite, the embedded default).

20 products × 250 versions (5,000), one a day; each version has its rootfs blob and four results with
their logs (20,000 attempts and log blobs). Every product has the default policy with keep 3; a third of
the testing versions passed. At a time 300 days after the first version, a retention pass retires,
deletes and drops what the policy says, then deletes every blob nothing references.

Side by side on an identical copy of the same store: the bare unreferenced-blob sweep (what `imageci gc`
does to blobs), which only has to find and delete the same garbage once the catalog no longer points at
it — the floor any retention pays.

Last line: `retention (5000 versions, 20000 results): dry run X s, pass Y s (N versions/s); deleted D
versions and B blobs (S MB); the bare blob sweep on the same store Z s (retention R× it)`.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import sized
from sqlalchemy import update

from imageci.app import retention
from imageci.app.session import Session
from imageci.app.upkeep import UNREFERENCED_GRACE
from imageci.config import Settings
from imageci.store import lookups
from imageci.store.catalog import NewArtifact
from imageci.store.models import Attempt, State, Version

START = datetime(2030, 1, 1, tzinfo=UTC)


def seed(settings: Settings, products: int, versions: int, rng: random.Random) -> None:
    s = Session.open(settings)
    for p in range(products):
        name = f"product-{p:02d}"
        definition = f"name: {name}\nsuite: bookworm\nkeep: 3\n"
        for i in range(versions):
            created = START + timedelta(days=i)
            rootfs = s.store.put_bytes(f"{name} {i} rootfs".encode() + os.urandom(2048))
            v = s.catalog.register_version(name, rootfs.digest, [NewArtifact("rootfs", "rootfs.tar", rootfs.digest,
                                                                              rootfs.size)],
                                           input_hash=f"{p}-{i}", definition=definition, build_info={})
            with s.catalog.session() as db:
                db.execute(update(Version).where(Version.id == v.id).values(created_at=created))
            passed = rng.random() < 0.33
            run = s.catalog.start_run(v.digest, v.id, {})
            for t in range(4):
                log = s.store.put_bytes(f"{name} {i} log {t}".encode() + os.urandom(512))
                s.catalog.record_attempt(Attempt(
                    run_id=run, image_digest=v.digest, test_id=f"t{t}", test_digest="d", testbed="sandbox",
                    attempt=1, started_at=created, ended_at=created, exit_code=0 if passed else 1,
                    verdict="pass" if passed else "fail", reason="", log_digest=log.digest))
            s.catalog.finish_run(run, 0 if passed else 1)
            if passed and i % 10 == 0:
                s.catalog.promote_on(v.id, None, actor="bench", reason="bench")
        for old in sorted(s.catalog.versions(name, {State.STABLE}), key=lambda v: v.serial)[:-3]:
            s.catalog.transition(old.id, State.INACTIVE, actor="bench", reason="superseded")
    for digest in s.store.iter_digests():  # the blobs' times on the same fake clock as the catalog's
        when = START.timestamp()
        os.utime(s.store.path(digest), (when, when))
    s.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=sized(20, 2))
    ap.add_argument("--versions", type=int, default=sized(250, 10))
    args = ap.parse_args()
    rng = random.Random(16)
    with tempfile.TemporaryDirectory(prefix="imageci-bench-retention-") as tmp:
        home = Path(tmp) / "home"
        settings = Settings.load(home, {"IMAGECI_HOME": str(home)})
        settings.ensure()
        t0 = time.monotonic()
        seed(settings, args.products, args.versions, rng)
        print(f"seeded {args.products * args.versions} versions in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        twin = Path(tmp) / "twin"
        shutil.copytree(settings.store_dir, twin, symlinks=True)
        now = START + timedelta(days=300)
        s = Session.open(settings)
        t0 = time.monotonic()
        dry = retention.retention(s, dry_run=True, now=now)
        dry_s = time.monotonic() - t0
        t0 = time.monotonic()
        done = retention.retention(s, now=now)
        pass_s = time.monotonic() - t0
        assert [(a.image, a.action) for a in dry.actions] == [(a.image, a.action) for a in done.actions]
        assert dry.blobs_deleted == done.blobs_deleted
        referenced = lookups.referenced_blobs(s.reader)
        s.close()
        # the peer: the same garbage, found and deleted by the bare sweep over an identical copy of the store
        from imageci.store.blobs import BlobStore

        peer = BlobStore(twin)
        t0 = time.monotonic()
        swept = peer.remove_unreferenced(referenced, (now - UNREFERENCED_GRACE).timestamp())
        sweep_s = time.monotonic() - t0
        assert {f"sha256:{d}" for d in swept} == set(done.blobs_deleted)
        n = args.products * args.versions
        deleted = sum(a.action == "deleted" for a in done.actions)
        print(f"retired {sum(a.action == 'inactive' for a in done.actions)}, deleted {deleted}; dropped "
              f"{done.logs_dropped} logs and {done.attempts_removed} results", file=sys.stderr)
        print(f"retention ({n} versions, {4 * n} results): dry run {dry_s:.2f} s, pass {pass_s:.2f} s "
              f"({n / pass_s:.0f} versions/s); deleted {deleted} versions and {len(done.blobs_deleted)} blobs "
              f"({done.bytes_freed / 1e6:.1f} MB); the bare blob sweep on the same store {sweep_s:.2f} s "
              f"(retention {pass_s / max(sweep_s, 1e-6):.1f}× it)")


if __name__ == "__main__":
    main()
