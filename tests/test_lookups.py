"""The read side: ``store.lookups`` answers the same through stdlib sqlite3 and
through SQLAlchemy, finds transient failures from the retries alone, and the
query commands never import the ORM on an up-to-date SQLite catalog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from imageci.app import queries
from imageci.app.session import Session
from imageci.cli.columns import clean, write_columns
from imageci.config import Settings
from imageci.errors import UnknownReferenceError
from imageci.store import failurelookups, gatelookups, lookups
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import Attempt, Consumer, Quarantine, RunStatus, State
from imageci.store.reading import Reader, SqliteReader

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def seed(cat: Catalog) -> dict[str, str]:
    """Two products, three versions, runs with solid, flaky, never-passing and errored-then-passing tests."""
    refs = {}
    for name, digest in (("demo", "a" * 64), ("demo", "b" * 64), ("other", "c" * 64)):
        v = cat.register_version(name, digest, [NewArtifact("rootfs", "rootfs.tar", digest, 1000),
                                                NewArtifact("build-log", "build.log", "d" * 64, 5)],
                                 input_hash=None, definition=f"name: {name}", build_info={}, actor="tester")
        refs[digest] = f"{name}@{v.serial}"
        run = cat.start_run(digest, v.id, {"tests": ["solid", "flaky", "broken", "errs"]})
        plan = {"solid": ["pass"], "flaky": ["fail", "fail", "pass"], "broken": ["fail", "fail"],
                "errs": ["error", "pass"]}
        for test, verdicts in plan.items():
            for n, verdict in enumerate(verdicts, 1):
                when = T0 + timedelta(minutes=n) if digest != "a" * 64 else T0 - timedelta(days=40)
                cat.record_attempt(Attempt(run_id=run, image_digest=digest, test_id=test, test_digest="t",
                                           testbed="sandbox", attempt=n, started_at=when,
                                           ended_at=when + timedelta(seconds=1.5), exit_code=0 if verdict == "pass"
                                           else 1, verdict=verdict, reason="" if verdict == "pass" else "exit 1",
                                           log_digest="e" * 64 if test == "solid" else None,
                                           known="https://bugs.example/2" if test == "broken" else None))
        cat.finish_run(run, 1)
    cat.transition(cat.resolve(refs["a" * 64]).id, State.STABLE, actor="alice", reason="gate held")
    # what a gate reads besides (store.gatelookups): the catalog's quarantine and the consumers, lifted and
    # removed ones among them
    for test, lifted in (("flaky", False), ("broken", True)):
        entry = cat.add_quarantine(Quarantine(test=test, tracker="https://bugs.example/1", expires=date(2999, 1, 2),
                                              mode="skip", testbeds=json.dumps(["sandbox"]), reason="known",
                                              created_by="tester"), "demo")
        if lifted:
            cat.lift_quarantine(entry.id, actor="tester", reason="fixed")
    for name in ("app", "gone"):
        cat.add_consumer(Consumer(name=name, source="/src", command="make check", timeout=60, gating=name == "app",
                                  snapshot="5" * 64, created_by="tester"), "demo")
    cat.remove_consumer("gone", actor="tester")
    return refs


def answers(reader: Reader, refs: dict[str, str]) -> dict[str, object]:
    """Everything the lookups say about the seeded catalog, as plain data."""
    out: dict[str, object] = {}
    for ref in ["demo", "demo:stable", "other:testing", *refs.values(), "sha256:" + "b" * 10]:
        out[f"resolve {ref}"] = lookups.resolve(reader, ref)
    for bad in ["demoo", "demo@20000101.001", "other:stable", "sha256:" + "f" * 12]:
        with pytest.raises(UnknownReferenceError) as exc:
            lookups.resolve(reader, bad)
        out[f"refuse {bad}"] = str(exc.value)
    out["versions"] = lookups.versions(reader)
    out["versions demo"] = lookups.versions(reader, "demo")
    for digest in ("a" * 64, "b" * 64):
        out[f"attempts {digest[0]}"] = lookups.attempts(reader, digest)
        out[f"runs {digest[0]}"] = lookups.runs(reader, digest)
    out["events"] = lookups.events(reader, lookups.resolve(reader, "demo:stable").id)
    out["flaky"] = lookups.transient_failures(reader, None, T0 - timedelta(days=1))
    out["flaky all"] = lookups.transient_failures(reader, None, T0 - timedelta(days=100))
    out["flaky other"] = lookups.transient_failures(reader, "other", T0 - timedelta(days=100))
    out["known all"] = failurelookups.known_counts(reader, None, T0 - timedelta(days=100))
    out["known recent"] = failurelookups.known_counts(reader, None, T0 - timedelta(days=1))
    out["known other"] = failurelookups.known_counts(reader, "other", T0 - timedelta(days=100))
    out["record"] = gatelookups.record(reader, lookups.resolve(reader, "demo:stable").id)
    out["records"] = gatelookups.records(reader, "demo", {State.TESTING.value, State.STABLE.value})
    out["quarantines"] = gatelookups.quarantines(reader, "demo")
    out["consumers"] = gatelookups.consumers(reader, "demo")
    out["first seen"] = gatelookups.first_seen(reader, "demo", ["solid", "errs", "never"])
    return out


def check_answers(mine: dict[str, object], refs: dict[str, str]) -> None:
    """What the lookups say about the seeded catalog is right, on any database."""
    flaky = mine["flaky all"]
    assert isinstance(flaky, list)
    assert sorted((f.product, f.test_id, tuple(f.failed_attempts)) for f in flaky) == [
        ("demo", "errs", (1,)), ("demo", "errs", (1,)), ("demo", "flaky", (1, 2)), ("demo", "flaky", (1, 2)),
        ("other", "errs", (1,)), ("other", "flaky", (1, 2))]  # never-passing and single-try tests are not flakes
    recent, other = mine["flaky"], mine["flaky other"]
    assert isinstance(recent, list) and isinstance(other, list)
    assert len(recent) == 4 and {f.product for f in other} == {"other"}  # the 40-day-old run is past --since
    known = {k: [(c.product, c.test_id, c.tracker, c.failures) for c in mine[k]]  # type: ignore[attr-defined]
             for k in ("known all", "known recent", "known other")}
    assert known == {"known all": [("demo", "broken", "https://bugs.example/2", 4),
                                   ("other", "broken", "https://bugs.example/2", 2)],
                     "known recent": [("demo", "broken", "https://bugs.example/2", 2),  # the 40-day-old run is past
                                      ("other", "broken", "https://bugs.example/2", 2)],
                     "known other": [("other", "broken", "https://bugs.example/2", 2)]}
    sized = mine["versions"]
    assert isinstance(sized, list) and [(v.name, size) for v, size in sized] == [("demo", 1000), ("demo", 1000),
                                                                                ("other", 1000)]
    assert "did you mean: demo" in str(mine["refuse demoo"])
    assert mine["resolve demo:stable"] == mine[f"resolve {refs['a' * 64]}"]
    attempts = mine["attempts b"]
    assert isinstance(attempts, list) and [a.verdict for a in attempts[:3]] == ["pass", "fail", "fail"]
    assert all(a.started_at.tzinfo is not None and (a.ended_at - a.started_at).total_seconds() == 1.5
               for a in attempts)
    events = mine["events"]
    assert isinstance(events, list) and [(e.from_state, e.to_state, e.actor) for e in events][-1] == (
        "testing", "stable", "alice")
    record, records = mine["record"], mine["records"]
    assert isinstance(record, gatelookups.VersionRecord) and isinstance(records, list)
    assert (record.digest, record.state, record.definition, [a.kind for a in record.artifacts]) == (
        "a" * 64, "stable", "name: demo", ["rootfs", "build-log"])
    assert [r.digest for r in records] == ["a" * 64, "b" * 64] and records[0] == record
    quarantined, consumers = mine["quarantines"], mine["consumers"]
    assert isinstance(quarantined, list) and isinstance(consumers, list)
    assert [(q.test, q.expires, q.mode, q.testbeds) for q in quarantined] == [
        ("flaky", date(2999, 1, 2), "skip", '["sandbox"]')]  # the lifted one is not
    assert [(c.name, c.gating, c.timeout, c.snapshot) for c in consumers] == [("app", True, 60, "5" * 64)]
    assert mine["first seen"] == {"solid": T0 - timedelta(days=40), "errs": T0 - timedelta(days=40)}  # not "never"


def test_lookups_answer_the_same_through_sqlite3_and_sqlalchemy(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cat = Catalog.open(url)
    refs = seed(cat)
    fast = SqliteReader.open(url)
    assert fast is not None
    mine, orms = answers(fast, refs), answers(cat.reader(), refs)
    assert mine == orms
    check_answers(mine, refs)
    assert cat.resolve("demo:stable").digest == "a" * 64  # the ORM resolves through the same lookup
    fast.close()
    cat.close()


def test_transient_failures_read_the_retries_never_the_whole_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Catalog.open(url).close()
    reader = SqliteReader.open(url)
    assert reader is not None
    plan = " | ".join(str(row[-1]) for row in reader.rows(
        f"EXPLAIN QUERY PLAN WITH retried AS ({lookups._RETRIED}) SELECT a.run_id, a.verdict FROM retried r "
        "JOIN attempts a ON a.run_id = r.run_id AND a.test_id = r.test_id AND a.testbed = r.testbed",
        {"since": "2000-01-01"}))
    assert "USING INDEX ix_attempts_retries" in plan and "COVERING INDEX ix_attempts_group" in plan, plan
    assert "SCAN attempts" not in plan, plan
    reader.close()


def test_known_failures_are_counted_from_the_labelled_attempts_never_every_attempt(tmp_path: Path) -> None:
    """`imageci flaky` counts known failures each time: the few labelled attempts, through their index, not
    every attempt of every version."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Catalog.open(url).close()
    reader = SqliteReader.open(url)
    assert reader is not None
    for where in ("", "WHERE p.name = :name"):
        plan = " | ".join(str(row[-1]) for row in reader.rows(
            f"EXPLAIN QUERY PLAN {failurelookups.KNOWN.format(where=where)}", {"since": "2000-01-01", "name": "x"}))
        assert "INDEX ix_attempts_known" in plan and "ix_attempts_image_digest" not in plan, plan
        assert "SCAN attempts" not in plan, plan
    reader.close()


def test_the_runs_still_running_are_read_through_their_index(tmp_path: Path) -> None:
    """Every query command and every run asks for the runs still marked running here (to mark those whose
    process died aborted): an index lookup, not a read of every run ever recorded."""
    from imageci.store import runlookups

    url = f"sqlite:///{tmp_path / 'c.db'}"
    Catalog.open(url).close()
    reader = SqliteReader.open(url)
    assert reader is not None
    for sql in (runlookups.RUNNING_HERE, runlookups.RUNNING):
        plan = " | ".join(str(row[-1]) for row in reader.rows(f"EXPLAIN QUERY PLAN {sql}",
                                                              {"running": "running", "host": "h"}))
        assert "INDEX ix_runs_running" in plan and "SCAN runs" not in plan and "TEMP B-TREE" not in plan, plan
    reader.close()


def test_the_fast_reader_is_used_only_on_a_current_sqlite_catalog(tmp_path: Path) -> None:
    assert SqliteReader.open(f"sqlite:///{tmp_path / 'absent.db'}") is None  # the catalog creates it
    assert SqliteReader.open("postgresql://u@127.0.0.1/x") is None
    assert SqliteReader.open("sqlite://") is None
    from imageci.store import database

    old = f"sqlite:///{tmp_path / 'old.db'}"
    database.upgrade(database.make_engine(old), "0004")
    assert SqliteReader.open(old) is None  # an older schema: opening the catalog migrates it first


def _session(tmp_path: Path) -> Session:
    home = tmp_path / "home"
    return Session.open(Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None))


def test_a_query_on_a_new_home_creates_the_catalog_and_marks_dead_runs_aborted(tmp_path: Path) -> None:
    session = _session(tmp_path)
    assert queries.images(session) == []  # no catalog yet: it is created, not refused
    cat = session.catalog
    v = cat.register_version("demo", "a" * 64, [], input_hash=None, definition="name: demo", build_info={})
    run = cat.start_run(v.digest, v.id, {"tests": ["t"]}, owner=str(tmp_path / "gone.lock"))
    session.close()
    again = _session(tmp_path)
    res = queries.results(again, "demo")
    assert [(r.run, r.status) for r in res.runs] == [(run, RunStatus.ABORTED.value)]
    again.close()


# `imageci ARGS` in a process of its own, then on stderr: whether SQLAlchemy was imported, the exit status, and
# which of some heavy modules were loaded (test_gate runs `imageci gate` through it too)
PROBE = ("import sys, runpy\nsys.argv = ['imageci'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('imageci.cli', run_name='__main__')\n"
         "except SystemExit as e:\n    code = e.code\n"
         "print('ORM', any(m.startswith('sqlalchemy') for m in sys.modules), 'EXIT', code, file=sys.stderr)\n"
         "print('LOADED', *sorted(m for m in ('rich.console', 'imageci.testbeds.base', 'httpx', 'dns') "
         "if m in sys.modules), file=sys.stderr)\n")

def test_query_commands_never_import_sqlalchemy_on_a_current_sqlite_catalog(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    url = f"sqlite:///{home / 'catalog.db'}"
    cat = Catalog.open(url)
    refs = seed(cat)
    cat.close()
    ref = refs["b" * 64]
    env = {**os.environ, "IMAGECI_HOME": str(home), "IMAGECI_DB_URL": url}
    for argv in (["images", "--json"], ["results", ref, "--json"], ["events", ref], ["flaky", "--since", "3650d"],
                 ["results", "nope"]):
        res = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env)
        assert "ORM False" in res.stderr, (argv, res.stderr)
        assert ("EXIT 2" if argv[-1] == "nope" else "EXIT 0") in res.stderr, (argv, res.stderr)
        # nor testbeds, HTTP or DNS clients, nor rich's console where nothing is printed through it
        loaded = set(res.stderr.splitlines()[-1].split()[1:])
        assert not loaded & {"imageci.testbeds.base", "httpx", "dns"}, (argv, loaded)
        assert "rich.console" not in loaded or "--json" not in argv, (argv, loaded)
        if argv == ["results", ref, "--json"]:
            doc = json.loads(res.stdout)
            assert doc["image"] == ref and len(doc["attempts"]) == 8 and doc["runs"][0]["tests"] == 4


def test_columns_align_and_never_pass_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    assert clean("ok\x1b]0;pwned\x07\x9b2J") == "ok\\x1b]0;pwned\\x07\\x9b2J"
    write_columns(("name", "reason"), [("a", "x\x1b[2Jy"), ("long-name", "ü")])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["NAME       REASON", "a          x\\x1b[2Jy", "long-name  ü"]
