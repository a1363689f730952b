"""Promotion, retention and pruning: the rules (``policy``, pure) and their application to a real catalog
(``app.promotion``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from imageci.app.promotion import promote, prune
from imageci.errors import GateRefused, UsageError
from imageci.policy.gate import GateResult
from imageci.policy.promote import beyond_keep, promotion_reason, prunable
from imageci.store import lookups
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import State, Version, utcnow


@pytest.fixture
def cat(tmp_path: Path) -> Catalog:
    return Catalog.open(f"sqlite:///{tmp_path / 'c.db'}")


def _new(cat: Catalog, i: int) -> Version:
    d = f"{i:064x}"
    return cat.register_version("demo", d, [NewArtifact("rootfs", "r.tar", d, 1)], input_hash=str(i),
                                definition=None, build_info={}, actor="ci")


HOLDS = GateResult(holds=True)
FAILS = GateResult(holds=False, missing=[("smoke", "sandbox", "latest attempt: fail")])


def test_promotion_requires_the_gate_or_an_audited_force(cat: Catalog) -> None:
    v = _new(cat, 1)
    with pytest.raises(GateRefused, match="smoke on sandbox"):
        promote(cat, v, FAILS, keep=3)
    with pytest.raises(UsageError, match="--reason"):
        promote(cat, v, FAILS, keep=3, force=True)
    res = promote(cat, v, FAILS, keep=3, force=True, reason="CVE hotfix, tests broken upstream", actor="bob")
    assert res.forced and res.version.state == State.STABLE
    last = lookups.events(cat.reader(), v.id)[-1]
    assert (last.actor, last.to_state) == ("bob", "stable")
    assert last.reason == "forced: CVE hotfix, tests broken upstream"


def test_keep_at_most_k_stable_versions(cat: Catalog) -> None:
    versions = [_new(cat, i) for i in range(4)]
    retired_all = []
    for v in versions:
        retired_all += promote(cat, v, HOLDS, keep=2).retired
    states = {v.serial: v.state for v in cat.versions("demo")}
    assert [states[v.serial] for v in versions] == ["inactive", "inactive", "stable", "stable"]
    assert [r.serial for r in retired_all] == [versions[0].serial, versions[1].serial]
    assert "superseded by" in lookups.events(cat.reader(), versions[0].id)[-1].reason
    assert cat.resolve("demo:stable").serial == versions[-1].serial


def test_prune_retires_old_testing_versions_that_never_passed(cat: Catalog) -> None:
    old_failed, old_passed, fresh = _new(cat, 1), _new(cat, 2), _new(cat, 3)
    with cat.session() as s:
        s.execute(update(Version).where(Version.id.in_([old_failed.id, old_passed.id]))
                  .values(created_at=utcnow() - timedelta(days=5)))
    cat.finish_run(cat.start_run(old_failed.digest, old_failed.id, {}), 1)
    cat.finish_run(cat.start_run(old_passed.digest, old_passed.id, {}), 0)
    assert [v.id for v in prune(cat, older_than=timedelta(days=3), dry_run=True)] == [old_failed.id]
    assert cat.resolve(f"demo@{old_failed.serial}").state == State.TESTING  # dry run changed nothing
    pruned = prune(cat, older_than=timedelta(days=3), actor="janitor")
    assert [v.id for v in pruned] == [old_failed.id]
    states = {v.id: v.state for v in cat.versions("demo")}
    assert states == {old_failed.id: "inactive", old_passed.id: "testing", fresh.id: "testing"}
    assert lookups.events(cat.reader(), old_failed.id)[-1].actor == "janitor"


@dataclass(frozen=True)
class Stable:
    serial: str
    pinned: str | None = None


def test_the_promotion_rules_without_a_catalog() -> None:
    assert promotion_reason("demo@1", "testing", HOLDS, force=False, reason="", last_attempt=7) == \
        "gate held (evidence up to attempt 7)"
    assert promotion_reason("demo@1", "testing", FAILS, force=True, reason="hotfix", last_attempt=7) == \
        "forced: hotfix"
    for state, why in (("stable", "already stable"), ("inactive", "only testing versions")):
        with pytest.raises(UsageError, match=why):
            promotion_reason("demo@1", state, HOLDS, force=False, reason="", last_attempt=None)
    with pytest.raises(GateRefused, match="no gate is defined"):
        promotion_reason("demo@1", "testing", None, force=False, reason="", last_attempt=None)
    versions = [Stable("20260101.1"), Stable("20260102.1", pinned="release"), Stable("20260103.1"),
                Stable("20260104.1")]
    assert beyond_keep(versions, 2) == [versions[0]]  # the pinned one stays whatever keep says
    assert beyond_keep(versions, 4) == []
    now = utcnow()
    assert prunable(now - timedelta(days=5), now - timedelta(days=3), None, [1, None])
    assert not prunable(now - timedelta(days=5), now - timedelta(days=3), None, [1, 0])  # it passed once
    assert not prunable(now - timedelta(days=5), now - timedelta(days=3), "kept", [])  # pinned
    assert not prunable(now - timedelta(days=1), now - timedelta(days=3), None, [])  # young
