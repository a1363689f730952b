"""Flake policy as data: quarantine entries (warn / skip, scoped, expiring),
a grace period for new tests, and the flaky report."""

from __future__ import annotations

import json
import os
from datetime import date, timedelta
from pathlib import Path

import pytest

from imageci.app.gating import evidence_of
from imageci.app.waivers import policy_for
from imageci.checks.script import ScriptCheck
from imageci.definitions.quarantine import load_quarantine
from imageci.definitions.suite import load_suite
from imageci.engine.runner import Engine
from imageci.errors import SourceError
from imageci.policy.flake import make_waiver
from imageci.policy.gate import evaluate_gate
from imageci.store import gatelookups
from imageci.store.models import Version, utcnow
from imageci.testbeds.registry import make_backend
from imageci.verdicts import Verdict

from conftest import Env, FailsFirst, write_suite

TODAY = date.today()
LATER = (TODAY + timedelta(days=30)).isoformat()
BEFORE = (TODAY - timedelta(days=1)).isoformat()
FAILS = "#!/bin/sh\necho broken >&2\nexit 1\n"


def _quarantine(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "q.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("quarantine:\n  - test: a\n    tracker: https://b/1\n    expires: 2026-01-01\n    colour: red\n", 5,
     "unknown field"),
    ("quarantine:\n  - test: a\n    tracker: https://b/1\n    expires: someday\n", 4, "date"),
    ("quarantine:\n  - test: a\n    expires: 2026-01-01\n", 2, "required field missing"),
    ("quarantine:\n  - test: a\n    tracker: https://b/1\n    expires: 2026-01-01\n    mode: ignore\n", 5, "warn"),
    ("quarantine:\n  - test: a\n    tracker: ask bob\n    expires: 2026-01-01\n", 3, "tracker must be a URL"),
    ("quarantine:\n  - test: a\n   tracker: x\n", 3, "malformed YAML"),
])
def test_bad_quarantine_files_name_the_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    with pytest.raises(SourceError) as err:
        load_quarantine(_quarantine(tmp_path, text))
    assert err.value.line == line and needle in str(err.value), str(err.value)


def test_matching_scope_and_expiry(tmp_path: Path) -> None:
    q = load_quarantine(_quarantine(tmp_path, f"""quarantine:
  - test: "net-*"
    tracker: https://bugs.example.org/7
    expires: {LATER}
    testbeds: [qemu, "ssh:*"]
    arch: [arm64]
  - test: old
    tracker: debian#1
    expires: {BEFORE}
    mode: skip
"""))
    assert q.match("net-dns", "qemu", "arm64", TODAY) is not None
    assert q.match("net-dns", "ssh:pi", "arm64", TODAY) is not None
    assert q.match("net-dns", "sandbox", "arm64", TODAY) is None  # testbed out of scope
    assert q.match("net-dns", "qemu", "amd64", TODAY) is None  # arch out of scope
    assert q.match("dns", "qemu", "arm64", TODAY) is None
    assert q.match("old", "sandbox", "amd64", TODAY) is None  # expired: no longer applies
    assert q.match("old", "sandbox", "amd64", TODAY - timedelta(days=2)) is not None
    assert [loc.line for loc in q.expired(TODAY)] == [7]


@pytest.mark.root
def test_quarantine_warn_skip_scope_and_expiry_in_a_run(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "s", {"warned.sh": FAILS, "skipped.sh": "#!/bin/sh\ntouch /ran\nexit 1\n",
                                     "expired.sh": FAILS, "scoped.sh": FAILS, "fine.sh": "#!/bin/sh\ntrue\n"})
    (d / "quarantine.yaml").write_text(f"""quarantine:
  - test: warned
    tracker: https://bugs.example.org/1
    expires: {LATER}
    reason: races with the clock
  - test: skipped
    tracker: https://bugs.example.org/2
    expires: {LATER}
    mode: skip
  - test: expired
    tracker: https://bugs.example.org/3
    expires: {BEFORE}
  - test: scoped
    tracker: https://bugs.example.org/4
    expires: {LATER}
    testbeds: [qemu]
""")
    assert "quarantine" not in {t.name for t in load_suite(d).tests}  # the policy file is not a test
    ref = f"{version.product.name}@{version.serial}"
    res = e.cli("test", ref, "--suite", str(d), "--testbed", "sandbox", "--rerun-all", "--tap", str(tmp_path / "t"))
    assert res.returncode == 1, res.stdout + res.stderr  # expired and out-of-scope entries do not waive
    assert "quarantine.yaml:10: quarantine of 'expired' expired on" in res.stderr
    attempts = json.loads(e.cli("results", ref, "--json", check=True).stdout)["attempts"]
    mine = {a["test"]: a for a in attempts if a["run"] == max(x["run"] for x in attempts)}
    assert mine["warned"]["verdict"] == "fail"  # the attempt is recorded as it was
    assert mine["skipped"]["verdict"] == "skip" and "quarantined until" in mine["skipped"]["reason"]
    assert mine["skipped"]["log"] is None  # never ran
    assert mine["expired"]["verdict"] == mine["scoped"]["verdict"] == "fail"
    tap = (tmp_path / "t").read_text()
    warned = next(ln for ln in tap.splitlines() if "- warned [sandbox]" in ln)
    assert warned.startswith("not ok ") and "# TODO quarantined until" in warned
    assert next(ln for ln in tap.splitlines() if "- expired [sandbox]" in ln).endswith("expired [sandbox]")
    assert "flaky warned [sandbox]: #1 fail — quarantined until" in res.stdout, res.stdout
    assert "races with the clock" in res.stdout

    # the gate: waived requirements are met, the rest are not
    suite = load_suite(d)
    checks = [ScriptCheck(t) for t in suite.tests]
    q = load_quarantine(d / "quarantine.yaml")
    waiver = policy_for(e.catalog.reader(), version.product.name, [c.id for c in checks], q, arch="amd64", grace=None)
    gate = evaluate_gate(evidence_of(e.catalog.reader(), version, checks), checks, ["sandbox"], waiver)
    assert sorted(t for t, _, _ in gate.missing) == ["expired", "scoped"]
    assert sorted(t for t, _ in gate.satisfied) == ["fine", "skipped", "warned"]


@pytest.mark.root
def test_new_tests_only_warn_during_their_grace_period(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    name = f"brand-new-{os.getpid()}"
    d = write_suite(tmp_path / "s", {f"{name}.sh": FAILS}, "grace: 2d\n")
    ref = f"{version.product.name}@{version.serial}"
    first = e.cli("test", ref, "--suite", str(d), "--testbed", "sandbox")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "new test (first run now; grace period 2d)" in first.stdout
    again = e.cli("test", ref, "--suite", str(d), "--testbed", "sandbox")
    assert again.returncode == 0 and "new test (first run 20" in again.stdout
    seen = gatelookups.first_seen(e.catalog.reader(), version.product.name, [name])
    assert set(seen) == {name}
    # two days on, the same failure counts
    from imageci.definitions.quarantine import Quarantine

    later = make_waiver(Quarantine(), arch="amd64", grace=timedelta(days=2), first_seen=seen,
                        now=utcnow() + timedelta(days=2, minutes=1))
    assert later(name, "sandbox") is None
    assert make_waiver(Quarantine(), arch="amd64", grace=timedelta(days=2), first_seen=seen)(name, "x") is not None
    (d / "suite.yaml").write_text("grace: soon\n")
    bad = e.cli("test", ref, "--suite", str(d), "--testbed", "sandbox")
    assert bad.returncode == 2 and "suite.yaml:1" in bad.stderr and "bad duration" in bad.stderr


@pytest.mark.root
def test_flaky_report_lists_transient_failures_with_attempt_numbers(image_env: tuple[Env, Version]) -> None:
    e, version = image_env
    tag = os.urandom(3).hex()
    engine = Engine(e.catalog, e.store, {"sandbox": make_backend("sandbox", e.settings)}, jobs=2)
    report = engine.run(version, [FailsFirst(2, f"twice-{tag}"), FailsFirst(99, f"never-{tag}"),
                                  FailsFirst(0, f"solid-{tag}")], ["sandbox"], retries=3)
    assert {r.test_id: r.verdict for r in report.results}[f"twice-{tag}"] == Verdict.FLAKY
    res = e.cli("flaky", version.product.name, "--json", check=True)
    rows = [r for r in json.loads(res.stdout) if r["test"].endswith(tag)]
    assert len(rows) == 1  # a test that never passed is a failure, not a flake; one that never failed is neither
    assert rows[0]["test"] == f"twice-{tag}" and rows[0]["failed_attempts"] == [1, 2]
    assert [a["verdict"] for a in rows[0]["attempts"]] == ["fail", "fail", "pass"]
    assert rows[0]["run"] == report.run_id and rows[0]["image"] == f"{version.product.name}@{version.serial}"
    table = e.cli("flaky", "--since", "1h", check=True).stdout
    assert f"twice-{tag}" in table and "#1 fail, #2 fail, #3 pass" in table
    assert e.cli("flaky", "--since", "soon").returncode == 2
