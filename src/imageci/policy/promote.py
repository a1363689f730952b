"""Promotion to ``stable`` (gated, audited) and pruning of stale ``testing`` versions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from imageci.errors import GateRefused, UsageError
from imageci.policy.gate import GateResult
from imageci.policy.retention import never_passed
from imageci.store.catalog import Catalog, Evidence
from imageci.store.models import State, Version, as_utc, utcnow


@dataclass
class PromotionResult:
    version: Version
    retired: list[Version] = field(default_factory=list)
    forced: bool = False
    also: list[Version] = field(default_factory=list)  # the build's other architectures, promoted with it


def promote(catalog: Catalog, version: Version, gate: GateResult | None, *, keep: int, force: bool = False,
            reason: str = "", actor: str | None = None, evidence: Evidence | None = None,
            also: Sequence[tuple[Version, Evidence]] = ()) -> PromotionResult:
    """testing → stable when the gate holds (or ``force`` with a reason); then
    keep at most ``keep`` stable versions of the product, retiring the oldest. ``evidence`` is what the
    gate read: if results arrived since, nothing is promoted (EvidenceChanged; evaluate again).
    ``also``: the versions built with it for other architectures (the gate judged them too), promoted
    in the same transaction, each product keeping ``keep``."""
    actor = actor or catalog.actor
    if force and not reason.strip():
        raise UsageError("--force needs --reason: a forced promotion is audited")
    if version.state == State.STABLE:
        raise UsageError(f"{version.product.name}@{version.serial} is already stable")
    if version.state != State.TESTING:
        raise UsageError(f"{version.product.name}@{version.serial} is {version.state}; only testing versions "
                         "can be promoted")
    if not force and (gate is None or not gate.holds):
        raise GateRefused(gate.explain() if gate else "no gate is defined for this image; use --force --reason")
    why = f"forced: {reason}" if force else ("gate held" + (f": {reason}" if reason else ""))
    if not force and evidence is not None:
        why += f" (evidence up to attempt {evidence.last_attempt})"
    promoted = catalog.promote_on(version.id, None if force else evidence, actor=actor, reason=why,
                                  also=[(v.id, None if force else e) for v, e in also])
    retired = []
    for product, serial in [(promoted.product.name, promoted.serial),
                            *((v.product.name, v.serial) for v, _e in also)]:
        stable = catalog.versions(product, {State.STABLE})
        for old in sorted(stable, key=lambda v: v.serial, reverse=True)[keep:]:
            if old.pinned is not None:
                continue  # pinned: kept stable whatever `keep` says
            retired.append(catalog.transition(old.id, State.INACTIVE, actor=actor,
                                              reason=f"superseded by {serial} (keep={keep})"))
    return PromotionResult(promoted, retired, force, [catalog.resolve(f"{v.product.name}@{v.serial}")
                                                      for v, _e in also])


def prune(catalog: Catalog, *, older_than: timedelta, name: str | None = None, dry_run: bool = False,
          actor: str | None = None, allowed: Callable[[Version], bool] = lambda _v: True) -> list[Version]:
    """Retire testing versions older than ``older_than`` that never passed (no run of them ever ended
    green, or never tested), unless pinned; only those ``allowed`` says."""
    cutoff = utcnow() - older_than
    pruned = []
    for v in catalog.versions(name, {State.TESTING}):
        if as_utc(v.created_at) > cutoff or not allowed(v) or v.pinned is not None:
            continue
        if not never_passed([r.exit_code for r in catalog.runs(v.digest)]):
            continue
        pruned.append(v)
        if not dry_run:
            catalog.transition(v.id, State.INACTIVE, actor=actor or catalog.actor,
                               reason=f"pruned: in testing since {v.created_at:%Y-%m-%d} without a passing run")
    return pruned
