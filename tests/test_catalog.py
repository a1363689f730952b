from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from imageci.errors import UnknownReferenceError, UsageError
from imageci.store import catalogfile, database, lookups
from imageci.store.catalog import Catalog, NewArtifact, TransitionError
from imageci.store.models import State
from imageci.store.refs import parse_ref


def _register(cat: Catalog, name: str = "demo", digest: str = "a" * 64, input_hash: str = "i1"):
    return cat.register_version(name, digest, [NewArtifact("rootfs", "rootfs.tar", digest, 3)],
                                input_hash=input_hash, definition="name: demo", build_info={"k": 1},
                                actor="tester")


def exercise_catalog(cat: Catalog) -> None:
    """Behaviour every catalog backend must show (run on SQLite and PostgreSQL)."""
    v1 = _register(cat)
    v2 = _register(cat, digest="b" * 64, input_hash="i2")
    assert v1.state == State.TESTING and v1.serial < v2.serial
    assert len(v1.serial.split(".")[0]) == 8 and v1.serial[:8].isdigit()
    assert cat.resolve("demo").id == v2.id  # newest on testing
    assert cat.resolve("demo:testing").id == v2.id
    assert cat.resolve(f"demo@{v1.serial}").id == v1.id
    assert cat.resolve("sha256:" + "a" * 12).id == v1.id
    with pytest.raises(UnknownReferenceError, match="no version on channel 'stable'"):
        cat.resolve("demo:stable")
    cat.transition(v1.id, State.STABLE, actor="alice", reason="gate held")
    assert cat.resolve("demo:stable").id == v1.id
    with pytest.raises(TransitionError):
        cat.transition(v1.id, State.TESTING, actor="alice")
    events = lookups.events(cat.reader(), v1.id)
    assert [(e.from_state, e.to_state) for e in events] == [(None, "created"), ("created", "testing"),
                                                            ("testing", "stable")]
    assert events[-1].actor == "alice" and events[-1].reason == "gate held"
    assert cat.find_by_input_hash("demo", "i2").id == v2.id
    assert cat.find_by_input_hash("demo", "nope") is None
    exercise_pipes(cat)


def exercise_pipes(cat: Catalog) -> None:
    """A held testbed's pipe (``app.holdpipes``): bytes by offset, a retried write kept once, one past the end or
    beyond the backlog not taken, what was read dropped, the end said once read up to it; gone with the hold."""
    from datetime import timedelta

    from imageci.store.catalog.holds import DOWN, UP
    from imageci.store.models import Hold, utcnow

    hold = cat.add_hold(Hold(run_id=1, test="t", testbed="sandbox", actor="alice", host="h", worker="w", owner="",
                             enter="", until=utcnow() + timedelta(hours=1)))
    pipe = cat.open_pipe(hold.id, "alice")
    assert cat.take_pipes(hold.id) == [pipe] and cat.take_pipes(hold.id) == []
    assert cat.pipe_write(pipe, UP, 0, b"hello ", False, 16) == (6, True)
    assert cat.pipe_write(pipe, UP, 0, b"hello ", False, 16) == (6, True)  # a retry: kept once
    assert cat.pipe_write(pipe, UP, 9, b"late", False, 16) == (6, False)  # past the end
    assert cat.pipe_write(pipe, UP, 3, b"lo world", False, 16) == (11, True)  # overlaps: only what is new
    assert cat.pipe_write(pipe, UP, 11, b"x" * 8, False, 16) == (19, True)  # 11 wait unread: under the backlog
    assert cat.pipe_write(pipe, UP, 19, b"y", False, 16) == (19, False)  # 19 wait: not now
    assert cat.pipe_read(pipe, UP, 0, 5) == (b"hello", 19, False)
    assert cat.pipe_read(pipe, UP, 6, 5) == (b"world", 19, False)  # ("hello " was read: dropped)
    assert cat.pipe_read(pipe, UP, 11, 100) == (b"x" * 8, 19, False)
    assert cat.pipe_read(pipe, UP, 19, 100) == (b"", 19, False)
    assert cat.pipe_write(pipe, UP, 19, b"!", True, 16) == (20, True)
    assert cat.pipe_read(pipe, UP, 19, 100) == (b"!", 20, True) and cat.pipe_read(pipe, UP, 20, 9) == (b"", 20, True)
    assert cat.pipe_read(pipe, DOWN, 0, 100) == (b"", 0, False)  # the other stream is its own
    assert cat.release_hold(hold.id, "released by alice") and cat.pipe(pipe) is None
    assert cat.pipe_read(pipe, DOWN, 0, 100) == (b"", 0, True)


def test_catalog_on_sqlite(tmp_path: Path) -> None:
    cat = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    exercise_catalog(cat)
    with cat.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    cat.close()


def test_unknown_name_lists_close_names(tmp_path: Path) -> None:
    cat = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    _register(cat, name="debian-bookworm-minimal")
    with pytest.raises(UnknownReferenceError, match="did you mean: debian-bookworm-minimal"):
        cat.resolve("debian-bookworm-minmal")
    with pytest.raises(UnknownReferenceError, match="has no version '20000101.001'"):
        cat.resolve("debian-bookworm-minimal@20000101.001")


@pytest.mark.parametrize("bad", ["Demo", "demo:", "demo@", "sha256:xyz", "a b"])
def test_bad_references(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_ref(bad)


def test_old_schema_is_migrated_without_data_loss(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = database.make_engine(url)
    database.upgrade(engine, "0001")  # a catalog written by an older imageci
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO products (id, name, created_at) VALUES (1, 'legacy', '2026-01-01')"))
        conn.execute(text(
            "INSERT INTO versions (id, product_id, serial, digest, state, created_at) "
            "VALUES (1, 1, '20260101.001', :d, 'stable', '2026-01-01')"), {"d": "c" * 64})
    engine.dispose()
    assert "attempts" not in _tables(tmp_path / "old.db")
    cat = Catalog.open(url)  # opening migrates
    assert database.current_revision(cat.engine) == database.head_revision()
    assert {"runs", "attempts"} <= _tables(tmp_path / "old.db")
    v = cat.resolve("legacy:stable")
    assert v.serial == "20260101.001" and v.digest == "c" * 64
    cat.close()


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migration_records_each_version_s_architecture_and_ends_runs_that_never_ended(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = database.make_engine(url)
    database.upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO products (id, name, created_at) VALUES (1, 'p', '2026-01-01')"))
        for i, definition in enumerate(["name: p\narchitecture: arm64\nsuite: bookworm\n", "name: p\n", None], 1):
            conn.execute(text("INSERT INTO versions (id, product_id, serial, digest, state, created_at, definition) "
                              "VALUES (:i, 1, :s, :d, 'testing', '2026-01-01', :t)"),
                         {"i": i, "s": f"20260101.00{i}", "d": f"{i}" * 64, "t": definition})
        conn.execute(text("INSERT INTO runs (id, image_digest, started_at, options, actor) "
                          "VALUES (1, :d, '2026-01-01', '{}', 'x')"), {"d": "1" * 64})
    engine.dispose()
    cat = Catalog.open(url)
    assert [v.architecture for v in cat.versions("p")] == ["arm64", "amd64", "amd64"]
    assert cat.runs("1" * 64)[0].status == "aborted"  # killed before this revision could record it
    cat.close()


def test_a_new_version_records_its_architecture(tmp_path: Path) -> None:
    cat = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    v = cat.register_version("pi", "d" * 64, [NewArtifact("rootfs", "r.tar", "d" * 64, 1)], input_hash=None,
                             definition=None, build_info={}, architecture="arm64")
    assert cat.resolve("pi").architecture == "arm64" == v.architecture
    cat.close()


def test_runs_whose_process_died_are_marked_aborted_with_what_was_recorded(tmp_path: Path) -> None:
    from imageci.store.models import Attempt, utcnow

    cat = Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")
    v = _register(cat)
    live = cat.start_run(v.digest, v.id, {}, owner="/live.lock")
    dead = cat.start_run(v.digest, v.id, {}, owner="/dead.lock")
    done = cat.start_run(v.digest, v.id, {}, owner="/dead.lock")
    cat.finish_run(done, 0)
    now = utcnow()
    cat.record_attempt(Attempt(run_id=dead, image_digest=v.digest, test_id="t", test_digest="x", testbed="sandbox",
                               attempt=1, started_at=now, ended_at=now, exit_code=0, verdict="pass", reason=""))
    aborted = cat.abort_dead_runs(lambda owner: owner == "/live.lock")
    assert [r.id for r in aborted] == [dead]
    runs = {r.id: r for r in cat.runs(v.digest)}
    assert (runs[dead].status, runs[live].status, runs[done].status) == ("aborted", "running", "finished")
    assert runs[dead].ended_at is not None and runs[dead].exit_code is None
    assert len(cat.attempts(v.digest, run_id=dead)) == 1  # nothing recorded is lost
    cat.close()


@pytest.mark.parametrize("damage", ["empty", "random", "half", "foreign"])
def test_a_damaged_catalog_is_refused_and_left_as_it_was(tmp_path: Path, damage: str) -> None:
    from imageci.errors import CatalogUnusableError

    path = tmp_path / "catalog.db"
    good = Catalog.open(f"sqlite:///{path}")
    for i in range(40):
        _register(good, digest=f"{i:064x}", input_hash=f"h{i}")
    good.close()
    for extra in tmp_path.glob("catalog.db-*"):
        extra.unlink()
    data = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "random":
        path.write_bytes(bytes(range(256)) * 64)
    elif damage == "half":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE notes (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(CatalogUnusableError) as exc:
        cat = Catalog.open(f"sqlite:///{path}")
        cat.versions()  # damage further in shows on first use
    message = str(exc.value)
    assert str(path) in message
    assert "is not an imageci catalog" in message if damage == "foreign" else "Nothing was changed" in message
    assert path.read_bytes() == before  # never replaced, never migrated into


def test_the_cli_refuses_a_zero_byte_catalog_with_its_own_exit_code(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    (home / "catalog.db").write_bytes(b"")
    env = {**os.environ, "IMAGECI_HOME": str(home)}
    env.pop("IMAGECI_DB_URL", None)
    res = subprocess.run([sys.executable, "-m", "imageci.cli", "images"], capture_output=True, text=True, env=env)
    assert res.returncode == 8, res.stdout + res.stderr
    assert "is empty (0 bytes)" in res.stderr and "Traceback" not in res.stderr
    assert (home / "catalog.db").read_bytes() == b""  # not replaced by an empty catalog
    (home / "catalog.db").write_bytes(b"x" * 4096)
    res = subprocess.run([sys.executable, "-m", "imageci.cli", "results", "demo"], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 8 and "not a SQLite database" in res.stderr and "Traceback" not in res.stderr


def test_the_head_revision_opening_compares_with_is_alembic_s_head() -> None:
    """Opening an up-to-date catalog compares with catalogfile.HEAD and never imports Alembic."""
    assert database.head_revision() == catalogfile.HEAD
