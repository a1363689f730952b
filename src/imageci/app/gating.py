"""The gate, promotion and pruning: one definition of each for every interface."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from imageci.app.planning import flake_policy, suite_of
from imageci.app.session import Session
from imageci.app.versions import gate_of, keep_of
from imageci.checks.suite import suite_checks
from imageci.errors import UsageError
from imageci.policy.gate import GateResult, evaluate_gate, required_checks
from imageci.policy.promote import PromotionResult
from imageci.policy.promote import promote as promote_version
from imageci.policy.promote import prune as prune_versions
from imageci.store.models import Version


def gate(session: Session, version: Version, *, quarantine: Path | None = None) -> GateResult | None:
    """Whether the version's gate holds on the evidence recorded for it (None: it has no gate).
    The required tests are those of the version's stored suite, at their current content."""
    g = gate_of(version)
    if g is None:
        return None
    suite = suite_of(session, version, warn=False)
    checks = suite_checks(suite)
    waiver = flake_policy(session, version, suite, checks, quarantine, warn=False)
    return evaluate_gate(session.catalog, version, required_checks(checks, g.tests), g.testbeds, waiver)


def promote(session: Session, ref: str, *, to: str = "stable", force: bool = False, reason: str = "",
            quarantine: Path | None = None) -> PromotionResult:
    """testing → stable when the gate holds (or forced, with a reason); audited."""
    if to != "stable":
        raise UsageError(f"can only promote to 'stable' (got {to!r})")
    version = session.catalog.resolve(ref)
    result = gate(session, version, quarantine=quarantine)
    return promote_version(session.catalog, version, result, keep=keep_of(version), force=force, reason=reason)


def prune(session: Session, *, older_than: timedelta, name: str | None = None,
          dry_run: bool = False) -> list[Version]:
    """Retire testing versions older than ``older_than`` that never had a passing run."""
    return prune_versions(session.catalog, older_than=older_than, name=name, dry_run=dry_run)
