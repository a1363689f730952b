"""The test suite's own machinery: `make test` runs pytest-xdist workers with ``--dist
loadgroup``, and the module fixtures and VM turns that testplan.SHARED_GROUPS promise hold only
while a group's tests really stay on one worker (pytest 9.2 silently broke that: xdist #1386)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
