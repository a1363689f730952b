"""Each verdict on a testing version told against the product's stable version (issue 33.1): regression,
always-failed, fixed, new — one rule (policy.reference) for every test, shown by `test`, `results`, `gate`,
JUnit, TAP and the API; a failing test with no verdict on stable runs there once (a reference run); a gate
may accept the failures stable had too (`gate: {allow: [always-failed]}`), each named. On busybox images
whose marker file the suite reads, in the sandbox."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from imageci.policy.reference import Change, classify, status_of
from imageci.store.catalog import NewArtifact
from imageci.store.models import Version

from conftest import Env, busybox_rootfs, write_suite

APPLETS = ("sh", "grep", "true", "cat", "echo")
SUITE = {
    "keeps-alpha": "#!/bin/sh\ngrep -qw alpha /etc/imageci-marker\n",
    "wants-gamma": "#!/bin/sh\ngrep -qw gamma /etc/imageci-marker\n",
    "wants-delta": "#!/bin/sh\ngrep -qw delta /etc/imageci-marker || { echo 'no delta' >&2; exit 1; }\n",
    "has-sh": "#!/bin/sh\ntrue\n",
}


@pytest.mark.parametrize(("here", "there", "change"), [
    ("failed", "passed", Change.REGRESSION), ("failed", "failed", Change.ALWAYS_FAILED),
    ("passed", "failed", Change.FIXED), ("passed", "passed", None),
    ("failed", "unknown", Change.NEW), ("passed", "unknown", Change.NEW),  # never ran there
    ("failed", None, Change.NEW), ("passed", None, Change.NEW),  # no stable version
    ("unknown", "passed", None), ("unknown", None, None),  # an error or a skip says nothing
])
def test_the_rule(here: str, there: str | None, change: Change | None) -> None:
    assert classify(here, there) is change  # type: ignore[arg-type]


def test_what_attempts_say() -> None:
    assert status_of(["fail", "pass"]) == "passed" and status_of(["flaky"]) == "passed"
    assert status_of(["error", "fail"]) == "failed"
    assert status_of(["error", "skip"]) == "unknown" and status_of([]) == "unknown"


def _import(env: Env, tmp_path: Path, name: str, marker: str, suite: Path) -> str:
    tar = busybox_rootfs(tmp_path / f"{name}-{marker.replace(' ', '-')}.tar", marker, APPLETS)
    done = env.cli("import", name, str(tar), "--suite", str(suite))
    assert done.returncode == 0, done.stderr
    v = env.catalog.versions(name)[-1]
    return f"{name}@{v.serial}"


def _results(env: Env, ref: str) -> dict[str, object]:
    done = env.cli("results", ref, "--json")
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


def _changes(res: dict[str, object]) -> dict[str, str | None]:
    return {a["test"]: a["change"] for a in res["attempts"]}  # type: ignore[attr-defined,index]


@pytest.mark.root
def test_each_verdict_is_told_against_stable_and_a_reference_run_happens_once(env: Env, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", SUITE)
    v1 = _import(env, tmp_path, "img", "alpha beta", suite)
    first = env.cli("test", v1)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "no stable version to compare with" in first.stdout  # every verdict is new
    res = _results(env, v1)
    assert res["reference"] is None and set(_changes(res).values()) == {"new"}
    assert env.cli("promote", v1, "--force", "--reason", "the first").returncode == 0

    epsilon = "#!/bin/sh\ngrep -qw epsilon /etc/imageci-marker\n"
    later = write_suite(tmp_path / "later", {**SUITE, "wants-epsilon": epsilon})
    v2 = _import(env, tmp_path, "img", "gamma", later)
    junit, tap = tmp_path / "j.xml", tmp_path / "t.tap"
    ran = env.cli("test", v2, "--junit", str(junit), "--tap", str(tap))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    # wants-epsilon never ran on v1 with this content: it ran there now, once, and failed there too
    assert f"also ran on the stable version {v1}" in ran.stdout and "reference run" in ran.stdout
    lines = ran.stdout.splitlines()
    assert any(f"▼ regression    keeps-alpha [sandbox] — passed on {v1}: broken by this version" in ln for ln in lines)
    assert any(f"≡ always-failed wants-delta [sandbox] — failed on {v1} too" in ln for ln in lines)
    assert any(f"≡ always-failed wants-epsilon [sandbox] — failed on {v1} too" in ln for ln in lines)
    assert any(f"▲ fixed         wants-gamma [sandbox] — failed on {v1}: fixed by this version" in ln for ln in lines)
    assert not any("has-sh" in ln and "—" in ln for ln in lines)  # passed on both: nothing to say
    res = _results(env, v2)
    assert res["reference"] == v1
    assert _changes(res) == {"keeps-alpha": "regression", "wants-gamma": "fixed", "wants-delta": "always-failed",
                             "has-sh": None, "wants-epsilon": "always-failed"}
    table = env.cli("results", v2).stdout
    assert f"verdicts told against the stable version {v1}" in table and "▼ regression" in table

    # the reference run is recorded on v1 as one, and a second run of v2 does not repeat it
    again = env.cli("test", v2)
    assert again.returncode == 1 and "reference run" not in again.stdout
    reference_runs = [r for r in _results(env, v1)["runs"] if r["reference_for"]]  # type: ignore[attr-defined]
    assert [r["reference_for"] for r in reference_runs] == [v2]
    assert f"is a reference run: what failed on {v2}" in env.cli("results", v1).stdout

    # JUnit and TAP carry the change
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props["imageci.change:keeps-alpha"] == f"regression: passed on {v1}: broken by this version"
    assert "imageci.change:has-sh" not in props
    blocks = tap.read_text().split("\nnot ok ")
    alpha = next(b for b in blocks if "keeps-alpha" in b.splitlines()[0])
    assert yaml.safe_load(alpha.split("  ---\n")[1].split("  ...")[0])["change"] == "regression"

    # the gate (strict) names each requirement's change
    gate = env.cli("gate", v2)
    assert gate.returncode == 5
    assert "keeps-alpha on sandbox [regression]" in gate.stdout
    assert "wants-delta on sandbox [always-failed]" in gate.stdout
    status = json.loads(env.cli("gate", v2, "--json").stdout)
    assert {r["test"]: r["change"] for r in status["unmet"]} == {
        "keeps-alpha": "regression", "wants-delta": "always-failed", "wants-epsilon": "always-failed"}
    assert status["accepted"] == []


def _defined(env: Env, name: str, imported: Version, gate: dict[str, object]) -> str:
    """``imported``'s bytes and suite as a version of ``name`` built from a definition with this gate."""
    definition = yaml.safe_dump({"name": name, "suite": "bookworm", "tests": {"suite": "suite", "gate": gate}})
    v = env.catalog.register_version(
        name, imported.digest, [NewArtifact(a.kind, a.filename, a.digest, a.size) for a in imported.artifacts],
        input_hash=None, definition=definition, build_info={}, architecture=imported.architecture)
    return f"{name}@{v.serial}"


@pytest.mark.root
def test_a_gate_may_accept_what_stable_failed_too_and_names_each(env: Env, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {k: SUITE[k] for k in ("keeps-alpha", "wants-delta")})
    staged = [env.catalog.resolve(_import(env, tmp_path, "staging", marker, suite))
              for marker in ("alpha", "alpha beta")]
    allow = {"tests": "all", "testbeds": ["sandbox"], "allow": ["always-failed"]}
    v1 = _defined(env, "lib", staged[0], allow)
    assert env.cli("test", v1).returncode == 1
    assert env.cli("promote", v1, "--force", "--reason", "the first").returncode == 0
    v2 = _defined(env, "lib", staged[1], allow)
    assert env.cli("test", v2).returncode == 1  # wants-delta still fails: the run says so
    gate = env.cli("gate", v2)
    assert gate.returncode == 0, gate.stdout
    assert "1 of them failures the stable version had too (allowed)" in gate.stdout
    assert "accepted: wants-delta on sandbox: latest attempt: fail" in gate.stdout
    assert f"it failed on {v1} too (the gate allows always-failed)" in gate.stdout
    status = json.loads(env.cli("gate", v2, "--json").stdout)
    assert [(r["test"], r["change"]) for r in status["accepted"]] == [("wants-delta", "always-failed")]
    assert env.cli("promote", v2).returncode == 0
    # a regression is never accepted
    v3 = _defined(env, "lib", env.catalog.resolve(_import(env, tmp_path, "staging", "beta", suite)), allow)
    assert env.cli("test", v3).returncode == 1
    refused = env.cli("gate", v3)
    assert refused.returncode == 5 and "keeps-alpha on sandbox [regression]" in refused.stdout
