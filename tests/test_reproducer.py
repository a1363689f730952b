"""Every run leaves a script that re-runs exactly it: same bytes, same test
revision (even after the suite changed), same testbeds and options."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from imageci.store.models import Version

from conftest import Env, write_suite

pytestmark = pytest.mark.root


def test_reproducer_reruns_the_same_test_revision_with_the_same_options(image_env: tuple[Env, Version],
                                                                        tmp_path: Path) -> None:
    e, version = image_env
    broken = f"broken-{os.getpid()}"  # the image's results are shared with other tests
    d = write_suite(tmp_path / "s", {f"{broken}.sh": "#!/bin/sh\necho revision-one >&2\nexit 1\n",
                                     "fine.sh": "#!/bin/sh\ntrue\n"})
    ref = f"{version.product.name}@{version.serial}"
    res = e.cli("run", ref, broken, "--suite", str(d), "--testbed", "sandbox", "--retries", "1",
                "--fresh", "suite", "--jobs", "1")
    assert res.returncode == 1, res.stdout + res.stderr
    found = re.search(r"re-run it: (.+reproduce\.sh'?)$", res.stdout, re.MULTILINE)
    assert found, res.stdout
    script = Path(shlex.split(found.group(1))[0])
    assert script.parent.parent == e.settings.runs_dir and oct(script.stat().st_mode & 0o777) == "0o700"
    text = script.read_text()
    assert f"sha256:{version.digest}" in text and "--retries 1" in text and "--fresh suite" in text
    (d / f"{broken}.sh").write_text("#!/bin/sh\ntrue\n")  # the suite moves on; the reproducer does not

    again = subprocess.run([str(script)], capture_output=True, text=True, env=e.env(), timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr
    attempts = json.loads(e.cli("results", ref, broken, "--json", check=True).stdout)["attempts"]
    runs = sorted({a["run"] for a in attempts})
    assert len(runs) == 2
    first, second = ([a for a in attempts if a["run"] == r] for r in runs)
    assert [a["attempt"] for a in second] == [1, 2]  # --retries 1 again
    assert all(a["verdict"] == "fail" and a["testbed"] == "sandbox" for a in first + second)
    assert "revision-one" in Path(second[0]["log"]).read_text()
    runs_db = {r.id: json.loads(r.options) for r in e.catalog.runs(version.digest)}
    assert runs_db[runs[0]]["tests"] == runs_db[runs[1]]["tests"] == [broken]
    assert runs_db[runs[1]]["testbeds"] == ["sandbox"]

    # extra arguments pass through, and the current suite (fixed) passes
    fixed = e.cli("run", ref, broken, "--suite", str(d), "--testbed", "sandbox")
    assert fixed.returncode == 0, fixed.stdout
    junit = tmp_path / "r.xml"
    assert subprocess.run([str(script), "--junit", str(junit)], env=e.env(), capture_output=True,
                          timeout=300).returncode == 1
    assert 'failures="1"' in junit.read_text()


def test_a_test_named_like_an_option_is_reproduced(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "s", {"--help": "#!/bin/sh\necho I am a test\n"})
    ref = f"{version.product.name}@{version.serial}"
    res = e.cli("run", ref, "--suite", str(d), "--testbed", "sandbox", "--rerun-all", "--", "--help")
    assert res.returncode == 0, res.stdout + res.stderr
    script = Path(shlex.split(re.search(r"re-run it: (.+)$", res.stdout, re.MULTILINE).group(1))[0])  # type: ignore[union-attr]
    assert script.read_text().rstrip().endswith('"$@" -- --help')
    junit = tmp_path / "r.xml"
    again = subprocess.run([str(script), "--junit", str(junit)], capture_output=True, text=True, env=e.env(),
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert 'name="--help' in junit.read_text()  # the test ran; imageci's help did not
    assert "Usage:" not in again.stdout
