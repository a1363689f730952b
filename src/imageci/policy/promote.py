"""Promotion to ``stable`` and pruning of stale ``testing`` versions: the rules,
decided from facts passed in (``app.promotion`` reads them from the catalog and
applies what these decide)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from imageci.errors import GateRefused, UsageError
from imageci.policy.gate import GateResult
from imageci.policy.retention import never_passed
from imageci.store.states import State, as_utc


class Kept(Protocol):
    """A stable version as ``keep`` sees it."""

    @property
    def serial(self) -> str: ...

    @property
    def pinned(self) -> str | None: ...


K = TypeVar("K", bound=Kept)


def promotion_reason(label: str, state: str, gate: GateResult | None, *, force: bool, reason: str,
                     last_attempt: int | None) -> str:
    """The audited reason of promoting version ``label`` (in ``state``) with ``gate``; refused (UsageError,
    GateRefused) unless it is in testing and the gate holds, or ``force`` comes with a reason.
    ``last_attempt``: the id of the newest attempt the gate read."""
    if force and not reason.strip():
        raise UsageError("--force needs --reason: a forced promotion is audited")
    if state == State.STABLE:
        raise UsageError(f"{label} is already stable")
    if state != State.TESTING:
        raise UsageError(f"{label} is {state}; only testing versions can be promoted")
    if not force and (gate is None or not gate.holds):
        raise GateRefused(gate.explain() if gate else "no gate is defined for this image; use --force --reason")
    why = f"forced: {reason}" if force else ("gate held" + (f": {reason}" if reason else ""))
    if not force and last_attempt is not None:
        why += f" (evidence up to attempt {last_attempt})"
    return why


def beyond_keep(stable: Sequence[K], keep: int) -> list[K]:
    """The stable versions of a product to retire so that at most ``keep`` stay (the newest; pinned ones
    always stay, whatever ``keep`` says)."""
    return [v for v in sorted(stable, key=lambda v: v.serial, reverse=True)[keep:] if v.pinned is None]


def prunable(created_at: datetime, cutoff: datetime, pinned: str | None, run_exits: Sequence[int | None]) -> bool:
    """Whether a testing version is stale: older than ``cutoff``, not pinned, and no run of it ever ended
    green (or it was never tested)."""
    return as_utc(created_at) <= cutoff and pinned is None and never_passed(list(run_exits))
