"""The promotion gate holds only on evidence about exactly these bytes and this test content.

The property tests generate random histories of attempts (on these bytes and
on others, with this test content and with older content), waivers (quarantine
warn/skip, grace) and known-flaky marks, and check the gate's rule, a pure
function of the evidence (no database); the tests on a real catalog check that
the evidence it is given is the attempts on these bytes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_lookups import PROBE

from imageci.app.gating import evidence_of, gate
from imageci.app.session import Session
from imageci.checks.base import Outcome
from imageci.checks.suite import suite_checks
from imageci.config import Settings
from imageci.definitions.limits import Limits
from imageci.definitions.quarantine import Quarantine
from imageci.definitions.suite import load_suite
from imageci.engine.waivers import Waiver
from imageci.policy.flake import make_waiver
from imageci.policy.gate import evaluate_gate
from imageci.store.blobs import BlobStore
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import SUITE, Attempt, Version, utcnow
from imageci.store.models import Quarantine as QuarantineRow
from imageci.store.snapshots import pack_tree
from imageci.testbeds import base
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

TESTBEDS = ("sandbox", "podman")
_serial = itertools.count(1)


@dataclass(frozen=True)
class Req:
    """A required check: only its identity and content digest matter to the gate."""

    id: str
    digest: str
    flaky: bool = False
    needs: tuple[str, ...] = ()
    description: str = ""
    limits: Limits = Limits()

    def precheck(self) -> Outcome | None:
        return None

    def run(self, testbed: base.Testbed) -> Outcome:
        raise AssertionError("the gate never runs tests")


@dataclass(frozen=True)
class Seen:
    """A recorded attempt as the gate reads it."""

    test_id: str
    testbed: str
    test_digest: str
    verdict: str
    exit_code: int | None
    reason: str = ""
    known: str | None = None


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return Catalog.open(f"sqlite:///{tmp_path_factory.mktemp('gate') / 'c.db'}")


def _version(cat: Catalog) -> Version:
    n = next(_serial)
    digest = f"{n:064x}"
    return cat.register_version(f"gate-{n}", digest, [NewArtifact("rootfs", "r.tar", digest, 1)], input_hash=None,
                                definition=None, build_info={}, actor="t")


def _record(cat: Catalog, run: int, image: str, test: str, test_digest: str, testbed: str, verdict: Verdict,
            exit_code: int | None) -> None:
    now = utcnow()
    cat.record_attempt(Attempt(run_id=run, image_digest=image, test_id=test, test_digest=test_digest,
                               testbed=testbed, attempt=1, started_at=now, ended_at=now, exit_code=exit_code,
                               verdict=verdict.value, reason=""))


def test_grace_never_waives_a_test_that_never_ran(cat: Catalog) -> None:
    """The issue's case: grace 7d, tests a and b, only a ran on these bytes: no promotion."""
    v = _version(cat)
    a, b = Req("a", "da"), Req("b", "db")
    run = cat.start_run(v.digest, v.id, {})
    _record(cat, run, v.digest, "a", "da", "sandbox", Verdict.PASS, 0)
    grace = make_waiver(Quarantine(), arch="amd64", grace=timedelta(days=7), first_seen={})
    assert grace("b", "sandbox") is not None  # b counts as new…
    gate = evaluate_gate(evidence_of(cat.reader(), v, [a, b]), [a, b], ["sandbox"], grace)
    assert not gate.holds  # …but it has no evidence
    assert gate.missing == [("b", "sandbox", "never run on these bytes with this test content")]
    # a failed run of b inside its grace period is evidence, and the waiver excuses the failure
    _record(cat, run, v.digest, "b", "db", "sandbox", Verdict.FAIL, 1)
    assert evaluate_gate(evidence_of(cat.reader(), v, [a, b]), [a, b], ["sandbox"], grace).holds


def test_evidence_about_other_bytes_or_older_test_content_does_not_count(cat: Catalog) -> None:
    v, other = _version(cat), _version(cat)
    check = Req("smoke", "new-content")
    run = cat.start_run(v.digest, v.id, {})
    _record(cat, run, other.digest, "smoke", "new-content", "sandbox", Verdict.PASS, 0)  # other bytes
    _record(cat, run, v.digest, "smoke", "old-content", "sandbox", Verdict.PASS, 0)  # the test changed since
    gate = evaluate_gate(evidence_of(cat.reader(), v, [check]), [check], ["sandbox"])
    assert not gate.holds and "never run" in gate.missing[0][2]
    skip = make_waiver(Quarantine(), arch="amd64", grace=timedelta(days=1), first_seen={})
    assert not evaluate_gate(evidence_of(cat.reader(), v, [check]), [check], ["sandbox"], skip).holds
    # a harness skip is not evidence either, even for a test marked flaky or waived
    _record(cat, run, v.digest, "smoke", "new-content", "sandbox", Verdict.SKIP, None)
    flaky = Req("smoke", "new-content", flaky=True)
    assert not evaluate_gate(evidence_of(cat.reader(), v, [flaky]), [flaky], ["sandbox"], skip).holds
    _record(cat, run, v.digest, "smoke", "new-content", "sandbox", Verdict.SKIP, SKIP_EXIT_CODE)
    assert evaluate_gate(evidence_of(cat.reader(), v, [check]), [check], ["sandbox"]).holds  # "does not apply here"


# ---- properties over random histories -------------------------------------------------------

ATTEMPT = st.tuples(
    st.booleans(),  # on these image bytes (else another version's)
    st.booleans(),  # with the current test content (else an older revision)
    st.sampled_from(TESTBEDS),
    st.sampled_from([(Verdict.PASS, 0), (Verdict.FAIL, 1), (Verdict.ERROR, None), (Verdict.SKIP, None),
                     (Verdict.SKIP, SKIP_EXIT_CODE), (Verdict.FLAKY, 1)]),
)
TEST = st.tuples(
    st.lists(ATTEMPT, max_size=5),
    st.sampled_from([None, "warn", "skip"]),  # waiver in force at gate time
    st.booleans(),  # marked flaky
)


def _evaluate(tests: list[tuple[list[tuple[bool, bool, str, tuple[Verdict, int | None]]], str | None, bool]], *,
              noise: bool = True) -> tuple[bool, dict[str, set[str]]]:
    """The gate over a random history; attempts on other bytes are another version's: never its evidence."""
    checks, waivers, evidence, seen = [], {}, {}, []
    for i, (attempts, mode, flaky) in enumerate(tests):
        tid = f"t{i}"
        checks.append(Req(tid, f"c{i}", flaky=flaky))
        if mode is not None:
            waivers[tid] = Waiver(mode, f"waived ({mode})")  # type: ignore[arg-type]
        for mine, current, tb, (verdict, code) in attempts:
            if not mine or (not noise and not current):
                continue
            seen.append(Seen(tid, tb, f"c{i}" if current else f"old{i}", verdict.value, code))
            if current:
                evidence.setdefault(tid, set()).add(tb)
    gate = evaluate_gate(seen, checks, list(TESTBEDS), lambda t, _tb: waivers.get(t))
    return gate.holds, evidence


@settings(max_examples=300, deadline=None)
@given(st.lists(TEST, min_size=1, max_size=3))
def test_the_gate_holds_only_with_evidence_for_every_requirement(tests: list) -> None:  # type: ignore[type-arg]
    holds, evidence = _evaluate(tests)
    if holds:
        for i in range(len(tests)):
            assert evidence.get(f"t{i}") == set(TESTBEDS), f"t{i} had no evidence on some testbed"


@settings(max_examples=300, deadline=None)
@given(st.lists(TEST, min_size=1, max_size=3))
def test_attempts_with_older_test_content_never_change_the_verdict(tests: list) -> None:  # type: ignore[type-arg]
    assert _evaluate(tests)[0] == _evaluate(tests, noise=False)[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(ATTEMPT, max_size=5), st.just(None), st.just(False)), min_size=1, max_size=3))
def test_without_waivers_a_requirement_needs_a_pass_or_a_self_skip(tests: list) -> None:  # type: ignore[type-arg]
    holds, _ = _evaluate(tests)
    expected = True
    for attempts, _mode, _flaky in tests:
        for tb in TESTBEDS:
            mine = [(v, c) for m, cur, t, (v, c) in attempts if m and cur and t == tb]
            met = bool(mine) and (any(v == Verdict.PASS for v, _ in mine)
                                  or mine[-1] == (Verdict.SKIP, SKIP_EXIT_CODE))
            expected = expected and met
    assert holds == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(TEST, min_size=1, max_size=3))
def test_a_pass_on_these_bytes_meets_a_requirement_whatever_else_happened(tests: list) -> None:  # type: ignore[type-arg]
    passing = [(attempts + [(True, True, tb, (Verdict.PASS, 0)) for tb in TESTBEDS], mode, flaky)
               for attempts, mode, flaky in tests]
    assert _evaluate(passing)[0]



def test_auto_in_a_gate_judges_each_test_on_the_lightest_testbed_it_ran_on(cat: Catalog) -> None:
    """`testbeds: [auto]`: where `--testbed auto` ran each test — the sandbox for one, a VM for another."""
    v = _version(cat)
    plain, machine = Req("plain", "dp"), Req("machine", "dm")
    run = cat.start_run(v.digest, v.id, {})
    _record(cat, run, v.digest, "plain", "dp", "sandbox", Verdict.PASS, 0)
    _record(cat, run, v.digest, "machine", "dm", "qemu", Verdict.FAIL, 1)
    gate = evaluate_gate(evidence_of(cat.reader(), v, [plain, machine]), [plain, machine], ["auto"])
    assert gate.satisfied == [("plain", "sandbox")] and [m[:2] for m in gate.missing] == [("machine", "qemu")]
    _record(cat, run, v.digest, "machine", "dm", "qemu", Verdict.PASS, 0)
    assert evaluate_gate(evidence_of(cat.reader(), v, [plain, machine]), [plain, machine], ["auto"]).holds
    never = Req("never", "dn")  # no attempt anywhere: missing, as on any testbed
    assert evaluate_gate(evidence_of(cat.reader(), v, [never]), [never], ["auto"]).missing == [
        ("never", "auto", "never run on these bytes with this test content")]


GATED = "name: gated\nsuite: bookworm\ntests:\n  suite: suite\n  gate:\n    tests: all\n    testbeds: [sandbox]\n"


def test_imageci_gate_judges_through_the_reader_alone_as_the_orm_s_version_is_judged(tmp_path: Path) -> None:
    """``imageci gate`` reads what it judges (the version, its stored suite, evidence, catalog quarantine,
    grace, consumers) with plain SQL: SQLAlchemy is never imported, and its verdict is the one the gate
    gives an ORM ``Version`` (a run's, a promotion's)."""
    settings = Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'home' / 'catalog.db'}", jobs=1,
                        build_cache=None)
    settings.ensure()
    cat, store = Catalog.open(settings.db_url), BlobStore(settings.store_dir)
    suite = tmp_path / "suite"
    suite.mkdir()
    for name in ("passes", "fails", "waived", "new"):
        (suite / f"{name}.sh").write_text(f"#!/bin/sh\n# {name}\ntrue\n")
    (suite / "suite.yaml").write_text("grace: 1d\n")  # a new test's failures only warn for a day
    snap = pack_tree(suite, store)
    digests = {c.id: c.digest for c in suite_checks(load_suite(suite))}
    v = cat.register_version("gated", "e" * 64, [NewArtifact("rootfs", "r.tar", "e" * 64, 1),
                                                 NewArtifact(SUITE, "suite.tar", snap.digest, snap.size)],
                             input_hash=None, definition=GATED, build_info={}, actor="t")
    run = cat.start_run(v.digest, v.id, {})
    for test, verdict, age in (("passes", Verdict.PASS, 3), ("fails", Verdict.FAIL, 3), ("waived", Verdict.FAIL, 3),
                               ("new", Verdict.FAIL, 0)):
        cat.record_attempt(Attempt(run_id=run, image_digest=v.digest, test_id=test, test_digest=digests[test],
                                   testbed="sandbox", attempt=1, started_at=utcnow() - timedelta(days=age),
                                   ended_at=utcnow(), exit_code=0 if verdict == Verdict.PASS else 1,
                                   verdict=verdict, reason="" if verdict == Verdict.PASS else "exit 1"))
    cat.finish_run(run, 1)
    cat.add_quarantine(QuarantineRow(test="waived", tracker="https://bugs.example/1", expires=date(2999, 1, 1),
                                     mode="skip", reason="known", created_by="t"), "gated")
    ref = f"gated@{v.serial}"
    env = {**os.environ, "IMAGECI_HOME": str(settings.home), "IMAGECI_DB_URL": settings.db_url}
    res = subprocess.run([sys.executable, "-c", PROBE, "gate", ref, "--json"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert "ORM False EXIT 5" in res.stderr, res.stderr  # read without the ORM; 5: the gate does not hold
    # reading the suite's tests loads no testbed: a test kind is handed one when it runs
    assert "imageci.testbeds.base" not in res.stderr.splitlines()[-1].split(), res.stderr
    doc = json.loads(res.stdout)
    assert [r["test"] for r in doc["unmet"]] == ["fails"]
    assert sorted(r["test"] for r in doc["met"]) == ["new", "passes", "waived"]
    session = Session.open(settings)
    judged = gate(session, cat.resolve(ref))  # the ORM's version, as a promotion judges it
    assert judged is not None and not judged.holds
    assert sorted(judged.satisfied) == sorted((r["test"], r["testbed"]) for r in doc["met"])
    assert [(t, tb) for t, tb, _why in judged.missing] == [("fails", "sandbox")]
    session.close()
    cat.close()
