"""The test suite's own machinery: `make test` runs pytest-xdist workers with ``--dist
loadgroup``, and the module fixtures and VM turns that testplan.SHARED_GROUPS promise hold only
while a group's tests really stay on one worker (pytest 9.2 silently broke that: xdist #1386); the
suite's `imageci` commands come from a fork server (`clikit`) and answer as `python -m imageci.cli` does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clikit import IMAGECI, ForkServer

from conftest import REPO


def test_a_group_s_tests_run_on_one_worker(tmp_path: Path) -> None:
    picked = ["tests/test_vm_host.py", "tests/test_arch.py::test_the_oci_config_and_index_name_the_architecture",
              "tests/test_config.py"]  # the first two share the "tcg" group; test_config is a group of its own
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-n", "2", "--dist",
                           "loadgroup", "--basetemp", str(tmp_path / "t"), *picked],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    ran = re.findall(r"^\[(gw\d)\] \[\s*\d+%\] PASSED (\S+)", done.stdout, re.MULTILINE)
    tcg = {worker for worker, test in ran if test.endswith("@tcg")}
    assert len([t for _w, t in ran if t.endswith("@tcg")]) == 5, done.stdout[-3000:]
    assert len(tcg) == 1, ran  # every test of the group on one worker
    assert {t.split("::")[0] for _w, t in ran if t.endswith("@test_config")} == {"tests/test_config.py"}


def test_a_forked_command_answers_as_its_own_process_would(tmp_path: Path) -> None:
    env = dict(os.environ, IMAGECI_HOME=str(tmp_path / "home"), COLUMNS="200")
    server = ForkServer()
    try:
        for args in (["images"], ["images", "--json"], ["imagse"], ["--version"], ["results", "nosuch"],
                     ["build", str(tmp_path / "nothing.yaml")], ["--help"]):
            forked = server.run(args, env, REPO, timeout=120)
            own = subprocess.run([*IMAGECI, *args], env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
            assert (forked.returncode, forked.stdout, forked.stderr) == (own.returncode, own.stdout, own.stderr), args
        other = server.run(["images", "--json"], {**env, "IMAGECI_HOME": str(tmp_path / "other")}, REPO, 120)
        assert other.returncode == 0 and other.stdout.strip() == "[]"  # each command its own environment
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):  # past its timeout it is killed, as subprocess.run does
            server.run(["dashboard", "--listen", "127.0.0.1:0"], env, REPO, timeout=3)
        assert time.monotonic() - started < 60
    finally:
        server.stop()
