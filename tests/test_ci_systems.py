"""`imageci ci gitlab|github`: a version's tests as another CI system's jobs. The GitLab pipeline is
run for real by gitlab-ci-local (its shell executor) against `imageci serve` on 127.0.0.1: every job
runs `imageci run` there, the server records each attempt, and each job leaves its JUnit report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from imageci.app import tokens
from imageci.app.access import LOCAL
from imageci.app.ciplans import CiEntry, CiPlan, github_matrix
from imageci.app.session import Session
from imageci.config import Settings

from conftest import REPO, busybox_rootfs, require_tool, write_suite
from serverkit import start_server

pytestmark = pytest.mark.root
SUITE = {"passes": "#!/bin/sh\ntrue\n", "fails": "#!/bin/sh\necho nope\nexit 1\n",
         "needs a machine": "#!/bin/sh\n# imageci-needs: isolation-machine\ntrue\n"}


def test_a_github_matrix_is_one_entry_per_test_or_shards_past_its_limit() -> None:
    plan = CiPlan(image="x@1", digest="sha256:" + "0" * 64, architecture="amd64",
                  entries=[CiEntry(test=f"t{i}", testbed=tb, needs=[], requires=[tb, "arch:amd64"])
                           for i in range(300) for tb in ("sandbox", "podman")])
    small = github_matrix(plan.model_copy(update={"entries": plan.entries[:10]}))
    assert len(small["include"]) == 10 and small["include"][0]["run"].endswith("-- t0")
    big = github_matrix(plan)
    assert len(big["include"]) == 256
    ran = sorted((e["testbed"], t) for e in big["include"] for t in e["tests"])
    assert ran == sorted((e.testbed, e.test) for e in plan.entries)  # every test once, none twice


def test_a_gitlab_child_pipeline_runs_in_gitlab_ci_local_against_the_server(tmp_path: Path) -> None:
    require_tool(shutil.which("gitlab-ci-local") is not None, "gitlab-ci-local (npm)")
    home = tmp_path / "server"
    suite = write_suite(tmp_path / "suite", SUITE)
    tar = busybox_rootfs(tmp_path / "bb.tar", "ci", ("sh", "true", "echo"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    res = subprocess.run([sys.executable, "-m", "imageci.cli", "import", "bb", str(tar), "--suite", str(suite)],
                         env={**env, "IMAGECI_HOME": str(home)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    running = start_server(home)
    server = next(running)
    try:
        session = Session.open(Settings.load(home, {}))
        token = tokens.create(session, "gitlab-runner", "default", "test", by=LOCAL).secret
        session.close()
        remote = {**env, "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": token, "XDG_CONFIG_HOME": str(tmp_path)}
        made = subprocess.run([sys.executable, "-m", "imageci.cli", "ci", "gitlab", "bb:testing"], env=remote,
                              capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        doc = yaml.safe_load(made.stdout)
        jobs = {k: v for k, v in doc.items() if k not in ("stages", "variables")}
        assert sorted(jobs) == sorted(f"{t} [sandbox]" for t in SUITE)
        assert doc["variables"] == {"IMAGECI_REF": "bb@" + doc["variables"]["IMAGECI_REF"].split("@")[1],
                                    "IMAGECI_SERVER": server.url}
        project = tmp_path / "project"
        project.mkdir()
        (project / ".gitlab-ci.yml").write_text(made.stdout)
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        subprocess.run(["git", "-c", "user.email=ci@example.org", "-c", "user.name=ci", "commit", "-q",
                        "--allow-empty", "-m", "ci"], cwd=project, check=True)
        runner = {**env, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}", "HOME": str(tmp_path)}
        ran = subprocess.run(["gitlab-ci-local", "--concurrency", "1", "--variable", f"IMAGECI_TOKEN={token}",
                              "--variable", f"IMAGECI_HOME={tmp_path / 'runner-home'}"], cwd=project, env=runner,
                             capture_output=True, text=True, timeout=600)
        out = ran.stdout + ran.stderr
        # gitlab-ci-local's verdict on each job: the failing test fails its job, the skipped one (exit 4)
        # is an allowed failure (a warning), the passing one passes
        assert re.search(r"PASS +passes \[sandbox\]", out) and re.search(r"FAIL +fails \[sandbox\]", out), out
        assert re.search(r"WARN +needs a machine \[sandbox\]", out), out
        there = server.get("/api/v1/images/bb:testing/results", token).json()
        verdicts = {a["test"]: a["verdict"] for a in there["attempts"]}
        assert verdicts == {"passes": "pass", "fails": "fail", "needs a machine": "skip"}, out
        assert len(there["runs"]) == 3 and all(r["actor"] == "gitlab-runner" for r in there["runs"])
        reports = sorted((project / ".gitlab-ci-local" / "artifacts").rglob("imageci-junit/*.xml"))
        assert len(reports) == 3, out
        cases = {c.get("name"): c for r in reports for c in ET.parse(r).getroot().iter("testcase")}
        assert set(cases) >= {"passes", "fails"} and cases["fails"].find("failure") is not None
        github = subprocess.run([sys.executable, "-m", "imageci.cli", "ci", "github", "bb:testing"], env=remote,
                                capture_output=True, text=True)
        matrix = json.loads(github.stdout)
        assert sorted(e["tests"][0] for e in matrix["include"]) == sorted(SUITE)
    finally:
        with pytest.raises(StopIteration):
            next(running)


def test_ci_of_an_unknown_image_is_exit_2(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "imageci.cli", "ci", "gitlab", "nope:testing"], cwd=REPO,
                         env={**os.environ, "IMAGECI_HOME": str(tmp_path)}, capture_output=True, text=True)
    assert res.returncode == 2 and "nope" in res.stderr and "Traceback" not in res.stderr
    bogus = subprocess.run([sys.executable, "-m", "imageci.cli", "ci", "github", "nope", "--testbed", "vmware"],
                           cwd=REPO, env={**os.environ, "IMAGECI_HOME": str(tmp_path)}, capture_output=True, text=True)
    assert bogus.returncode == 2 and "unknown testbed 'vmware'" in bogus.stderr
