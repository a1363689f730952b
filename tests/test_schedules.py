"""Schedules: a definition's `schedule:` line, fired by `imageci scheduler` at its cron times (a fake clock
here): first seen, it waits for its next time; missed times fire once; two schedulers never fire the same
time twice; a schedule that fires twice with unchanged inputs builds once, tests and promotes."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imageci.app import schedules
from imageci.app.session import Session
from imageci.errors import SourceError, UsageError
from imageci.store.catalog import Catalog

from conftest import EXAMPLE, Env

T0 = datetime(2030, 3, 1, 2, 0, tzinfo=UTC)


def _scheduled(tmp_path: Path, cron: str = "0 4 * * *") -> Path:
    """The minimal example, copied, with a schedule line."""
    where = tmp_path / "example"
    shutil.copytree(EXAMPLE, where)
    definition = where / "image.yaml"
    definition.write_text(definition.read_text() + f'schedule: "{cron}"\n')
    return definition


def test_a_schedule_fires_at_its_times_once_each(env: Env, tmp_path: Path) -> None:
    s = Session.open(env.settings)
    [entry] = schedules.entries([_scheduled(tmp_path)], None)
    assert entry.cron == "0 4 * * *" and entry.key == f"pipeline:{(tmp_path / 'example' / 'image.yaml').resolve()}"
    assert schedules.due(s, entry, T0) is None  # first seen at 02:00: it waits for 04:00
    assert schedules.due(s, entry, T0 + timedelta(hours=1)) is None
    at = T0 + timedelta(hours=2, minutes=1)
    assert schedules.due(s, entry, at) == T0 + timedelta(hours=2)
    assert s.catalog.claim_fire(entry.key, T0 + timedelta(hours=2), at)
    other = Catalog.open(env.settings.db_url)  # a second scheduler on the same catalog
    assert not other.claim_fire(entry.key, T0 + timedelta(hours=2), at)  # already claimed
    other.close()
    assert schedules.due(s, entry, at + timedelta(minutes=30)) is None
    # three days without a scheduler: the missed times fire once, for the latest
    later = T0 + timedelta(days=3, hours=5)
    assert schedules.due(s, entry, later) == T0 + timedelta(days=3, hours=2)
    # a changed expression is a new schedule: it waits for its next time
    [changed] = schedules.entries([_scheduled(tmp_path / "again", "30 * * * *")], None)
    assert schedules.due(s, changed, later) is None
    assert schedules.next_due([entry, changed], later) == datetime(2030, 3, 4, 7, 30, tzinfo=UTC)
    s.close()


def test_bad_schedules_are_refused_with_their_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"image.yaml:\d+: schedule: .*not a cron expression"):
        schedules.entries([_scheduled(tmp_path, "61 * * * *")], None)
    with pytest.raises(UsageError, match="--retention must be a cron expression"):
        schedules.entries([], "every night")
    with pytest.raises(UsageError, match="nothing to schedule"):
        schedules.entries([EXAMPLE / "image.yaml"], None)


@pytest.mark.root
def test_fired_twice_with_unchanged_inputs_it_builds_once(env: Env, tmp_path: Path) -> None:
    definition = _scheduled(tmp_path)
    s = Session.open(env.settings)
    entries = schedules.entries([definition], "30 3 * * *")
    assert schedules.tick(s, entries, T0) == []  # first seen
    day1 = schedules.tick(s, entries, T0 + timedelta(hours=2, minutes=5))  # 03:30 retention, 04:00 pipeline
    assert [(f.key, f.exit_code) for f in day1] == [(entries[0].key, 0), ("retention", 0)]
    assert day1[0].outcome.endswith("built; promoted to stable"), day1[0].outcome
    day2 = schedules.tick(s, entries, T0 + timedelta(days=1, hours=2, minutes=5))
    assert [f.exit_code for f in day2] == [0, 0]
    assert day2[0].outcome.endswith("unchanged inputs, not rebuilt; already stable"), day2[0].outcome
    assert len(s.catalog.versions("debian-bookworm-minimal")) == 1
    assert [(r.key, r.exit_code) for r in s.catalog.schedules()] == [(entries[0].key, 0), ("retention", 0)]
    # the CLI: --once fires nothing more today
    once = env.cli("scheduler", "--once", str(definition))
    assert once.returncode == 0 and once.stdout == ""
    s.close()
