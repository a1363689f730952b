"""Retention: which versions of a product become inactive and which are deleted, at a given time.

- a ``testing`` version older than ``testing_days`` that never passed (no run of it ever ended green)
  becomes inactive: nobody will promote it (Polar's rule);
- ``stable`` versions beyond the newest ``keep`` become inactive (as a promotion retires them);
- an ``inactive`` version older than ``keep_days`` is deleted: its bytes go, its record stays;
- a pinned version is never touched, and a version with a run in progress is never deleted.

Nothing here writes: the decisions are applied (or only listed, ``--dry-run``) by app.retention."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from imageci.definitions.image import Retention
from imageci.store.states import State, as_utc


@dataclass(frozen=True)
class VersionFacts:
    id: int
    label: str  # NAME@SERIAL
    serial: str
    state: str
    created_at: datetime
    pinned: str | None
    passed: bool  # a run of its bytes ended green
    running: bool  # a run of it is in progress


@dataclass(frozen=True)
class Decision:
    version: VersionFacts
    action: Literal["inactive", "delete"]
    reason: str


def never_passed(exit_codes: Sequence[int | None]) -> bool:
    """Polar's rule: no run of the version ever ended green (runs still going do not count)."""
    return not any(code == 0 for code in exit_codes)


def decide(versions: Sequence[VersionFacts], policy: Retention, keep: int, now: datetime) -> list[Decision]:
    """What retention does to one product's ``versions`` at ``now`` (oldest serial first)."""
    out: list[Decision] = []
    stable = sorted((v for v in versions if v.state == State.STABLE), key=lambda v: v.serial, reverse=True)
    newest_stable = {v.id for v in stable[:keep]}
    for v in sorted(versions, key=lambda v: v.serial):
        if v.pinned is not None:
            continue
        age = now - as_utc(v.created_at)
        state = v.state
        if state == State.TESTING and age > timedelta(days=policy.testing_days) and not v.passed:
            out.append(Decision(v, "inactive", f"retention: in testing since {v.created_at:%Y-%m-%d} (more than "
                                               f"{policy.testing_days} days) and never passed"))
            state = State.INACTIVE
        elif state == State.STABLE and v.id not in newest_stable:
            out.append(Decision(v, "inactive", f"retention: beyond the newest {keep} stable version(s)"))
            state = State.INACTIVE
        if state == State.INACTIVE and age > timedelta(days=policy.keep_days) and not v.running:
            out.append(Decision(v, "delete", f"retention: inactive and older than {policy.keep_days} days"))
    return out
