"""`imageci rerun RUN [--failed]`: the tests of an earlier run again on the same bytes and test content, as a
new run that names the one it repeats; `results` and the dashboard link the two."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from imageci.store.models import Version, label

from conftest import Env, write_suite
from dashkit import _serve, _stop

pytestmark = pytest.mark.root


def _runs(e: Env, ref: str) -> dict[int, dict[str, object]]:
    shown = json.loads(e.cli("results", "--json", ref, check=True).stdout)
    runs = {r["run"]: r for r in shown["runs"]}
    for r in runs.values():
        r["tests"] = sorted(a["test"] for a in shown["attempts"] if a["run"] == r["run"])
    return runs


def test_rerun_failed_runs_exactly_what_did_not_pass(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    ref = label(version)
    suite = write_suite(tmp_path / "suite", {
        "ok.sh": "#!/bin/sh\ntrue\n", "bad.sh": "#!/bin/sh\nexit 1\n",
        "worse.sh": "#!/bin/sh\nulimit -c unlimited\ncd /tmp\nsh -c 'kill -SEGV $$'\nexit 3\n"})
    first = e.cli("test", ref, "--suite", str(suite), "--rerun-all")
    assert first.returncode == 1, first.stderr
    original = int(re.findall(r"^run (\d+):", first.stdout, re.M)[-1])

    again = e.cli("rerun", str(original), "--failed")
    assert again.returncode == 1, again.stdout + again.stderr
    new = int(re.findall(r"^run (\d+) repeats run (\d+)$", again.stdout, re.M)[-1][0])
    runs = _runs(e, ref)
    assert runs[new]["tests"] == ["bad", "worse"] and runs[new]["repeats"] == original  # the failed subset only
    assert runs[original]["repeated_by"] == [new]
    assert f"run {new} repeats run {original}" in e.cli("results", ref, check=True).stdout

    every = e.cli("rerun", str(original), "--testbed", "sandbox")  # every test, even those that passed
    assert every.returncode == 1
    third = int(re.findall(r"^run (\d+) repeats", every.stdout, re.M)[-1])
    assert _runs(e, ref)[third]["tests"] == ["bad", "ok", "worse"]

    (suite / "bad.sh").write_text("#!/bin/sh\ntrue\n")  # the test's content changed: not a rerun any more
    refused = e.cli("rerun", str(original), "--failed")
    assert refused.returncode == 2 and "changed since: bad" in refused.stderr, refused.stderr
    assert e.cli("rerun", "999999").returncode == 2
    passed = e.cli("test", ref, "--suite", str(write_suite(tmp_path / "green", {"ok.sh": "#!/bin/sh\ntrue\n"})))
    green = int(re.findall(r"^run (\d+):", passed.stdout, re.M)[-1])
    nothing = e.cli("rerun", str(green), "--failed")
    assert nothing.returncode == 0 and "nothing failed" in nothing.stdout

    _dashboard_links(e, original, new)


def _dashboard_links(e: Env, original: int, new: int) -> None:
    """The run pages link a run and its rerun; an attempt's findings are on its run's page."""
    proc, url = _serve(e.home, "dashboard")
    try:
        page = httpx.get(f"{url}/runs/{new}", timeout=30).text
        assert f'<dt>Repeats</dt><dd><a href="/runs/{original}">run {original}</a>' in page
        assert '<span class="finding">coredump</span> core dump: /tmp/core' in page
        page = httpx.get(f"{url}/runs/{original}", timeout=30).text
        assert f'<a href="/runs/{new}">run {new}</a>' in page.split("<dt>Repeated by</dt>")[1]
    finally:
        _stop(proc)
