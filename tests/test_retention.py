"""Retention that deletes: on a catalog of many versions, at a fake time, exactly the versions the policy
names are retired or deleted, exactly the blobs nothing references any more are deleted (a young upload
and a blob another version shares stay), old logs and results go by their own ages, pinned versions and
versions a run is using are never touched, and nothing can run on a deleted version afterwards."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from imageci.app import pins, retention
from imageci.app.access import Principal, Scope
from imageci.app.session import Session
from imageci.errors import Forbidden, UsageError
from imageci.store import lookups
from imageci.store.catalog import NewArtifact, VersionDeleted
from imageci.store.models import Attempt, State, Version

from conftest import Env, busybox_rootfs, write_suite

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
DEFINITION = """name: base
suite: bookworm
keep: 2
retention:
  testing_days: 7
  keep_days: 30
  logs_days: 20
  attempts_days: 60
"""


class World:
    def __init__(self, s: Session) -> None:
        self.s = s
        self.v: dict[str, Version] = {}
        self.blob: dict[str, str] = {}

    def put(self, name: str, days_ago: float) -> str:
        blob = self.s.store.put_bytes(f"blob {name}".encode())
        when = (NOW - timedelta(days=days_ago)).timestamp()
        os.utime(self.s.store.path(blob.digest), (when, when))
        self.blob[name] = blob.digest
        return blob.digest

    def version(self, name: str, days_ago: int, *, shared: bool = False) -> Version:
        rootfs = self.put(name, days_ago)
        arts = [NewArtifact("rootfs", "rootfs.tar", rootfs, 8)]
        if shared:
            arts.append(NewArtifact("suite", "suite.tar", self.put("shared", 300), 8))
        v = self.s.catalog.register_version("base", rootfs, arts, input_hash=name, definition=DEFINITION,
                                            build_info={})
        with self.s.catalog.session() as db:
            db.execute(update(Version).where(Version.id == v.id).values(created_at=NOW - timedelta(days=days_ago)))
        self.v[name] = v
        return v

    def run(self, name: str, days_ago: int, exit_code: int | None, *, log: bool = True) -> None:
        v = self.v[name]
        run = self.s.catalog.start_run(v.digest, v.id, {})
        at = NOW - timedelta(days=days_ago)
        self.s.catalog.record_attempt(Attempt(
            run_id=run, image_digest=v.digest, test_id="smoke", test_digest="t", testbed="sandbox", attempt=1,
            started_at=at, ended_at=at, exit_code=exit_code or 0, verdict="pass" if exit_code == 0 else "fail",
            reason="", log_digest=self.put(f"{name}-log", days_ago) if log else None))
        if exit_code is not None:
            self.s.catalog.finish_run(run, exit_code)

    def stable(self, name: str) -> None:
        self.s.catalog.promote_on(self.v[name].id, None, actor="ci", reason="test")


def populate(s: Session) -> World:
    """Nine versions of ``base`` at the ages, states, runs and pins the retention tests judge."""
    w = World(s)
    w.version("v1", 200, shared=True)
    w.run("v1", 200, 0)
    w.stable("v1")  # the oldest of four stable versions: retired (keep 2), then deleted (older than 30 days)
    w.version("v2", 150)
    w.run("v2", 150, 0)
    w.stable("v2")  # pinned: kept stable although beyond keep
    w.version("v3", 100)
    w.run("v3", 100, 0)
    w.stable("v3")  # the second newest stable: kept, with its old log
    w.version("v4", 90)
    w.run("v4", 90, 1)  # never passed, old: retired and deleted; its result and log go
    w.version("v5", 40)
    w.run("v5", 40, 0)  # passed, never promoted: stays testing; its log (older than 20 days) goes
    w.version("v6", 10)  # never tested, older than 7 days: retired, but younger than 30: its bytes stay
    w.version("v7", 5, shared=True)
    w.run("v7", 5, 0)
    w.stable("v7")
    w.version("v8", 3)  # never passed, but only 3 days old: stays testing
    w.version("v9", 100)
    w.run("v9", 100, None)  # a run in progress: retired, never deleted while it runs
    s.catalog.pin(w.v["v2"].id, "release 1.0", actor="maint")
    w.put("young-upload", 10 / (24 * 60))  # uploaded 10 minutes ago, not yet committed: kept
    w.put("abandoned-upload", 2)  # two days old and never committed: deleted
    return w


@pytest.fixture
def world(env: Env) -> Iterator[World]:
    s = Session.open(env.settings)
    w = populate(s)
    yield w
    s.close()


def _actions(w: World, report: retention.RetentionReport) -> list[tuple[str, str]]:
    names = {f"base@{v.serial}": name for name, v in w.v.items()}
    return [(names[a.image], a.action) for a in report.actions]


def _states(w: World) -> dict[str, str]:
    by_id = {v.id: v.state for v in w.s.catalog.versions("base")}
    return {name: by_id[v.id] for name, v in w.v.items()}


def test_retention_at_a_fake_time_keeps_exactly_what_its_policy_says(world: World) -> None:
    w = world
    all_blobs = set(w.s.store.iter_digests())
    dry = retention.retention(w.s, dry_run=True, now=NOW)
    assert set(w.s.store.iter_digests()) == all_blobs  # nothing changed
    assert _states(w)["v1"] == "stable"

    done = retention.retention(w.s, now=NOW)
    expected = [("v1", "inactive"), ("v1", "deleted"), ("v4", "inactive"), ("v4", "deleted"), ("v6", "inactive"),
                ("v9", "inactive")]
    assert _actions(w, done) == _actions(w, dry) == expected
    assert _states(w) == {"v1": "deleted", "v2": "stable", "v3": "stable", "v4": "deleted", "v5": "testing",
                          "v6": "inactive", "v7": "stable", "v8": "testing", "v9": "inactive"}

    # v1's and v4's bytes; the logs of v4, v5 and v9 (older than 20 days, not stable); v1's log (its result went
    # with its bytes); the abandoned upload
    gone = {w.blob[n] for n in ("v1", "v4", "v1-log", "v4-log", "v5-log", "v9-log", "abandoned-upload")}
    assert set(w.s.store.iter_digests()) == all_blobs - gone
    inv = {f"sha256:{d}": n for n, d in w.blob.items()}
    assert sorted(inv[d] for d in done.blobs_deleted) == sorted(inv[d] for d in dry.blobs_deleted)
    assert {f"sha256:{d}" for d in gone} == set(done.blobs_deleted) == set(dry.blobs_deleted)
    assert w.blob["shared"] in set(w.s.store.iter_digests())  # v7 still holds it
    assert (done.logs_dropped, done.attempts_removed) == (dry.logs_dropped, dry.attempts_removed) == (3, 2)
    # v4's and v1's results are gone (their bytes are); v3's and v5's attempts stay, v5's without its log
    assert [a.log_digest for a in w.s.catalog.attempts(w.v["v5"].digest)] == [None]
    assert w.s.catalog.attempts(w.v["v4"].digest) == [] and w.s.catalog.attempts(w.v["v1"].digest) == []
    assert [a.log_digest for a in w.s.catalog.attempts(w.v["v3"].digest)] == [w.blob["v3-log"]]
    events = lookups.events(w.s.reader, w.v["v4"].id)
    assert [e.reason for e in events[-2:]] == [
        "retention: in testing since 2029-10-03 (more than 7 days) and never passed",
        "retention: inactive and older than 30 days"]

    again = retention.retention(w.s, now=NOW)  # nothing left to do
    assert [a.action for a in again.actions] == [] and again.blobs_deleted == []

    # nothing runs on a deleted version; its record stays
    with pytest.raises(VersionDeleted, match="deleted by retention"):
        w.s.catalog.start_run(w.v["v4"].digest, w.v["v4"].id, {})
    assert w.s.catalog.resolve(f"base@{w.v['v4'].serial}").state == "deleted"


def test_a_version_a_run_is_using_is_deleted_only_once_the_run_ends(world: World) -> None:
    w = world
    retention.retention(w.s, now=NOW)
    assert _states(w)["v9"] == "inactive" and w.blob["v9"] in set(w.s.store.iter_digests())
    [running] = [r for r in w.s.catalog.runs(w.v["v9"].digest) if r.status == "running"]
    w.s.catalog.finish_run(running.id, 1)
    retention.retention(w.s, now=NOW)
    assert _states(w)["v9"] == "deleted" and w.blob["v9"] not in set(w.s.store.iter_digests())


def test_pins_are_audited_and_need_scope_promote(world: World) -> None:
    w = world
    ref = f"base@{w.v['v6'].serial}"
    reader = Principal(name="r", namespace="default", scopes=frozenset({Scope.READ}))
    with pytest.raises(Forbidden):
        pins.pin(w.s, ref, "keep it", by=reader)
    with pytest.raises(Forbidden):
        retention.retention(w.s, now=NOW, by=Principal(name="m", namespace="default",
                                                       scopes=frozenset({Scope.PROMOTE})))
    row = pins.pin(w.s, ref, "customer X runs it", by=Principal(name="maint", namespace="default",
                                                                  scopes=frozenset({Scope.PROMOTE})))
    assert row.pinned == "customer X runs it"
    with pytest.raises(UsageError, match="already pinned"):
        pins.pin(w.s, ref, "again")
    retention.retention(w.s, now=NOW + timedelta(days=400))
    assert _states(w)["v6"] == "testing"  # pinned before it was retired: never touched
    assert lookups.events(w.s.reader, w.v["v6"].id)[-1].reason == "pinned: customer X runs it"
    pins.pin(w.s, ref, None)
    retention.retention(w.s, now=NOW + timedelta(days=400))
    assert _states(w)["v6"] == "deleted"


@pytest.mark.root
def test_retention_while_a_real_test_runs_on_the_version_it_would_delete(env: Env, tmp_path: Path) -> None:
    """A sandbox test runs on an inactive version whose age says delete: retention keeps it and its bytes; once
    the run ends, they go; then `imageci test` on it is refused with the reason."""
    suite = write_suite(tmp_path / "suite", {"slow": "#!/bin/sh\nsleep 6\ncat /etc/imageci-marker\n"})
    assert env.cli("import", "img", str(busybox_rootfs(tmp_path / "img.tar", "m", ("sh", "cat", "sleep"))),
                   "--suite", str(suite)).returncode == 0
    s = Session.open(env.settings)
    [v] = s.catalog.versions("img")
    rootfs = next(a.digest for a in v.artifacts if a.kind == "rootfs")
    s.catalog.transition(v.id, State.INACTIVE, reason="test")
    later = datetime.now(UTC) + timedelta(days=60)
    results: dict[str, object] = {}

    def test_it() -> None:
        results["run"] = env.cli("run", f"img@{v.serial}", "slow")

    t = threading.Thread(target=test_it)
    t.start()
    deadline = time.monotonic() + 30
    while not any(r.status == "running" for r in s.catalog.runs(v.digest)) and time.monotonic() < deadline:
        time.sleep(0.2)
    during = retention.retention(s, now=later)
    assert [a.action for a in during.actions] == []  # a run is in progress on it: not even considered
    assert s.catalog.resolve(f"img@{v.serial}").state == "inactive" and s.store.has(rootfs)
    t.join(60)
    run = results["run"]
    assert getattr(run, "returncode", None) == 0, getattr(run, "stderr", run)
    after = retention.retention(s, now=later)
    assert [a.action for a in after.actions] == ["deleted"] and not s.store.has(rootfs)
    assert not (env.settings.rootfs_cache / rootfs).exists()  # the unpacked tree went with it
    refused = env.cli("test", f"img@{v.serial}")
    assert refused.returncode == 2 and "deleted by retention" in refused.stderr
    s.close()
