"""Known failures (issue 33.3): a failure whose log matches a suite's known-failures.yaml entry, or one kept in
the catalog (`imageci known-failures add`), is labelled with its tracker in the run's output, `results`,
`gate`, JUnit, TAP and the flaky report, re-run as the entry says — and still fails."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from imageci.definitions.knownfailures import load_known
from imageci.errors import SourceError

from conftest import Env, busybox_rootfs, write_suite

pytestmark = pytest.mark.root

DNS = "#!/bin/sh\necho 'curl: (6) Could not resolve host: deb.example.org' >&2\nexit 1\n"
OTHER = "#!/bin/sh\necho 'assertion failed: 2 != 3' >&2\nexit 1\n"


def test_bad_entries_are_file_and_line_errors(tmp_path: Path) -> None:
    f = tmp_path / "known-failures.yaml"
    f.write_text("known-failures:\n  - test: net-*\n    pattern: '([unclosed'\n    tracker: https://bugs/1\n")
    with pytest.raises(SourceError, match=r"known-failures.yaml:3.*not a regular expression"):
        load_known(f)
    f.write_text("known-failures:\n  - test: net-*\n    pattern: x\n    tracker: nowhere\n")
    with pytest.raises(SourceError, match=r"known-failures.yaml:4.*tracker must be a URL"):
        load_known(f)
    f.write_text("known-failures:\n  - test: net-*\n    pattern: x\n    tracker: https://b/1\n    retry: 9\n")
    with pytest.raises(SourceError, match=r"known-failures.yaml:5"):
        load_known(f)


def test_a_known_failure_is_labelled_everywhere_rerun_and_still_fails(env: Env, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"net-fetch": DNS, "net-other": OTHER, "ok": "#!/bin/sh\ntrue\n"})
    (suite / "known-failures.yaml").write_text(
        "known-failures:\n  - test: net-*\n    pattern: 'Could not resolve host'\n"
        "    tracker: https://bugs.example.org/77\n    retry: 2\n")
    tar = busybox_rootfs(tmp_path / "img.tar", "one", ("sh", "echo", "true"))
    assert env.cli("import", "img", str(tar), "--suite", str(suite)).returncode == 0
    junit, tap = tmp_path / "j.xml", tmp_path / "t.tap"
    ran = env.cli("test", "img", "--junit", str(junit), "--tap", str(tap))
    assert ran.returncode == 1, ran.stdout + ran.stderr  # a label never makes a pass
    fetch = [ln for ln in ran.stdout.splitlines() if "net-fetch" in ln and "fail" in ln]
    assert len(fetch) == 3 and all("[known failure: https://bugs.example.org/77]" in ln for ln in fetch), fetch
    other = [ln for ln in ran.stdout.splitlines() if "net-other" in ln and "fail" in ln]
    assert len(other) == 1 and "known failure" not in other[0]  # its log does not match: not re-run, no label

    res = json.loads(env.cli("results", "img", "--json").stdout)
    known = {(a["test"], a["attempt"]): a["known"] for a in res["attempts"] if a["test"].startswith("net-")}
    assert known == {("net-fetch", 1): "https://bugs.example.org/77", ("net-fetch", 2): "https://bugs.example.org/77",
                     ("net-fetch", 3): "https://bugs.example.org/77", ("net-other", 1): None}
    gate = env.cli("gate", "img")
    assert gate.returncode == 5 and "[known failure: https://bugs.example.org/77]" in gate.stdout
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props["imageci.known:net-fetch"] == "https://bugs.example.org/77" and "imageci.known:net-other" not in props
    assert "known: https://bugs.example.org/77" in tap.read_text()
    flaky = env.cli("flaky")
    assert "known failure https://bugs.example.org/77: 3 failure(s) of net-fetch (img)" in flaky.stdout


def test_known_failures_kept_in_the_catalog(env: Env, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"net-other": OTHER})
    tar = busybox_rootfs(tmp_path / "img.tar", "one", ("sh", "echo", "true"))
    assert env.cli("import", "img", str(tar), "--suite", str(suite)).returncode == 0
    bad = env.cli("known-failures", "add", "img", "--test", "net-*", "--pattern", "([", "--tracker", "https://b/1")
    assert bad.returncode == 2 and "not a regular expression" in bad.stderr
    past = env.cli("known-failures", "add", "img", "--test", "net-*", "--pattern", "x", "--tracker", "https://b/1",
                   "--expires", "2001-01-01")
    assert past.returncode == 2 and "in the past" in past.stderr
    assert env.cli("known-failures", "add", "nosuch", "--test", "x", "--pattern", "x",
                   "--tracker", "https://b/1").returncode == 2
    added = env.cli("known-failures", "add", "img", "--test", "net-*", "--pattern", r"assertion failed: \d",
                    "--tracker", "debian#123", "--json")
    assert added.returncode == 0, added.stderr
    entry = json.loads(added.stdout)
    ran = env.cli("test", "img")
    assert ran.returncode == 1 and "[known failure: debian#123]" in ran.stdout
    listed = json.loads(env.cli("known-failures", "list", "--json").stdout)
    assert [(r["id"], r["in_force"]) for r in listed] == [(entry["id"], True)]
    assert env.cli("known-failures", "remove", str(entry["id"])).returncode == 0
    assert json.loads(env.cli("known-failures", "list", "--json").stdout) == []
    again = env.cli("test", "img", "--rerun-all")
    assert again.returncode == 1 and "known failure" not in again.stdout
