"""Promotion and pruning applied to the catalog: the facts read, the rules of
``policy.promote`` asked, the transitions written (each audited)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from imageci.policy.gate import GateResult
from imageci.policy.promote import beyond_keep, promotion_reason, prunable
from imageci.store.catalog import Catalog, Evidence
from imageci.store.models import State, Version, label, utcnow


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
    why = promotion_reason(label(version), version.state, gate, force=force, reason=reason,
                           last_attempt=evidence.last_attempt if evidence is not None else None)
    promoted = catalog.promote_on(version.id, None if force else evidence, actor=actor, reason=why,
                                  also=[(v.id, None if force else e) for v, e in also])
    retired = []
    for product, serial in [(promoted.product.name, promoted.serial),
                            *((v.product.name, v.serial) for v, _e in also)]:
        for old in beyond_keep(catalog.versions(product, {State.STABLE}), keep):
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
        if not allowed(v) or not prunable(v.created_at, cutoff, v.pinned,
                                          [r.exit_code for r in catalog.runs(v.digest)]):
            continue
        pruned.append(v)
        if not dry_run:
            catalog.transition(v.id, State.INACTIVE, actor=actor or catalog.actor,
                               reason=f"pruned: in testing since {v.created_at:%Y-%m-%d} without a passing run")
    return pruned
