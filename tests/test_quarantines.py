"""Quarantine entries kept in the catalog (`imageci quarantine`, the API, the
dashboard): the same data as a suite's quarantine.yaml, applied by the same
flake policy to runs and gates; added and lifted only with scope `promote` in
the product's namespace, with who and why kept; a promotion judged while an
entry was lifted is judged again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from imageci.app import gating, importing, quarantines
from imageci.app.access import Principal, Scope
from imageci.app.quarantines import QuarantineRequest
from imageci.app.session import Session
from imageci.checks.suite import suite_checks
from imageci.definitions.suite import load_suite
from imageci.errors import Forbidden, UnknownReferenceError, UsageError
from imageci.store.catalog import EvidenceChanged
from imageci.store.models import Attempt, State, utcnow

from conftest import Env, tiny_rootfs, write_suite

PROMOTER = Principal(name="maint", namespace="default", scopes=frozenset({Scope.PROMOTE}))
READER = Principal(name="reader", namespace="default", scopes=frozenset({Scope.READ}))
OTHER = Principal(name="other", namespace="elsewhere", scopes=frozenset({Scope.ADMIN}))


@pytest.fixture
def failing(env: Env, tmp_path: Path) -> Iterator[tuple[Session, str]]:
    """An imported version whose suite has `net` (failed on the sandbox) and `boot` (passed)."""
    s = Session.open(env.settings)
    tiny_rootfs(tmp_path / "rootfs.tar")
    suite = write_suite(tmp_path / "suite", {"net": "#!/bin/sh\nexit 1\n", "boot": "#!/bin/sh\ntrue\n"})
    done = importing.import_(s, "img", str(tmp_path / "rootfs.tar"), suite=suite)
    v = done.version
    run = s.catalog.start_run(v.digest, v.id, {})
    for check in suite_checks(load_suite(suite)):
        verdict = "fail" if check.id == "net" else "pass"
        now = utcnow()
        s.catalog.record_attempt(Attempt(run_id=run, image_digest=v.digest, test_id=check.id, test_digest=check.digest,
                                         testbed="sandbox", attempt=1, started_at=now, ended_at=now,
                                         exit_code=0 if verdict == "pass" else 1, verdict=verdict, reason=""))
    s.catalog.finish_run(run, 1)
    yield s, f"img@{v.serial}"
    s.close()


def _request(**kw: object) -> QuarantineRequest:
    fields: dict[str, object] = dict(product="img", test="net*", tracker="https://bugs.example.org/7",
                                     expires=(utcnow() + timedelta(days=7)).date(), reason="DNS under TCG")
    return QuarantineRequest(**{**fields, **kw})  # type: ignore[arg-type]


def test_a_catalog_entry_waives_the_gate_until_it_is_lifted(failing: tuple[Session, str]) -> None:
    s, ref = failing
    assert not gating.gate_status(s, ref).holds
    row = quarantines.add(s, _request(), by=PROMOTER)
    assert (row.id, row.source, row.added_by, row.in_force) == (1, "catalog #1", "maint", True)
    assert gating.gate_status(s, ref).holds  # net ran; its failure only warns now
    listed = quarantines.entries(s)
    assert [(r.source, r.test) for r in listed] == [("catalog #1", "net*")]
    lifted = quarantines.lift(s, 1, "fixed upstream", by=PROMOTER)
    assert (lifted.lifted_by, lifted.lift_reason, lifted.in_force) == ("maint", "fixed upstream", False)
    assert not gating.gate_status(s, ref).holds
    assert quarantines.entries(s) == [] and quarantines.entries(s, lifted=True)[0].lifted is not None
    with pytest.raises(UsageError, match="was lifted"):
        quarantines.lift(s, 1, by=PROMOTER)


def test_scope_namespace_and_bad_entries_are_refused(failing: tuple[Session, str]) -> None:
    s, _ref = failing
    with pytest.raises(Forbidden, match="promote"):
        quarantines.add(s, _request(), by=READER)
    with pytest.raises(UnknownReferenceError):
        quarantines.add(s, _request(), by=OTHER)  # another namespace's product: as if absent
    with pytest.raises(UsageError, match="in the past"):
        quarantines.add(s, _request(expires=(utcnow() - timedelta(days=1)).date()), by=PROMOTER)
    with pytest.raises(UsageError, match="tracker"):
        quarantines.add(s, _request(tracker="someday"), by=PROMOTER)
    with pytest.raises(UnknownReferenceError):
        quarantines.add(s, _request(product="img@1"), by=PROMOTER)
    quarantines.add(s, _request(), by=PROMOTER)
    with pytest.raises(Forbidden):
        quarantines.lift(s, 1, by=READER)
    with pytest.raises(UnknownReferenceError):
        quarantines.lift(s, 1, by=OTHER)
    with pytest.raises(UnknownReferenceError):
        quarantines.lift(s, 99, by=PROMOTER)


def test_a_promotion_judged_while_an_entry_was_lifted_is_judged_again(failing: tuple[Session, str]) -> None:
    s, ref = failing
    quarantines.add(s, _request(), by=PROMOTER)
    version = s.catalog.resolve(ref)
    evidence = s.catalog.evidence(version)  # what the gate read: the entry in force
    quarantines.lift(s, 1, by=PROMOTER)
    with pytest.raises(EvidenceChanged, match="quarantine"):
        s.catalog.promote_on(version.id, evidence, actor="maint")
    assert s.catalog.resolve(ref).state == State.TESTING


def test_the_cli_adds_lists_and_lifts(env: Env, failing: tuple[Session, str]) -> None:
    _s, ref = failing
    expires = (utcnow() + timedelta(days=3)).date().isoformat()
    done = env.cli("quarantine", "add", "img", "net*", "--tracker", "debian#1234", "--expires", expires,
                   "--reason", "flaky DNS", "--testbed", "qemu", "--mode", "skip")
    assert done.returncode == 0 and "quarantine #1" in done.stdout, done.stdout + done.stderr
    listed = json.loads(env.cli("quarantine", "list", "--json").stdout)
    assert [(r["id"], r["mode"], r["testbeds"], r["in_force"]) for r in listed] == [(1, "skip", ["qemu"], True)]
    assert "in force" in env.cli("quarantine", "list").stdout
    bad = env.cli("quarantine", "add", "img", "x", "--tracker", "t#1", "--expires", "tomorrow", "--reason", "r")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr
    bad = env.cli("quarantine", "add", "img", "x", "--tracker", "t#1", "--expires", expires, "--reason", "r",
                  "--mode", "sometimes")
    assert bad.returncode == 2 and "mode" in bad.stderr
    assert env.cli("quarantine", "lift", "1", "--reason", "done").returncode == 0
    again = env.cli("quarantine", "lift", "1")
    assert again.returncode == 2 and "was lifted" in again.stderr
    assert json.loads(env.cli("quarantine", "list", "--lifted", "--json").stdout)[0]["lift_reason"] == "done"
    assert env.cli("gate", ref).returncode == 5
