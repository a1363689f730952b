"""Every benchmark runs, in its quick mode (tiny sizes; the figures are not judged), so that a refactor
cannot break one unseen (bench/qemu_boot.py once called a method that had moved). `make bench` runs them
at full size and is where the figures come from."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.root]  # they build, boot and start containers

BENCH = REPO / "bench"
# run in quick mode by a test of their own, which also checks what they find
ELSEWHERE = {"dep8_vs_autopkgtest.py": "tests/test_dep8_parity.py", "structure_vs_cst.py": "tests/test_structure.py",
             "bisect_corpus.py": "tests/test_bisect.py"}
# xdist groups: LXD's tests share the daemon's state; the VM benchmarks run beside (not after) the TCG tests'
# group, which is already the longest one
GROUPS = {"lxd_fresh_instance.py": "lxd", "debugging.py": "lxd"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name != "common.py" and p.name not in ELSEWHERE)


def test_every_benchmark_is_run_by_make_bench_and_in_ci() -> None:
    made = set(re.findall(r"bench/(\w+\.py)", (REPO / "Makefile").read_text()))
    assert made == set(SCRIPTS) | set(ELSEWHERE)
    for script, test in ELSEWHERE.items():
        assert f'"{script}"' in (REPO / test).read_text() and '"--quick"' in (REPO / test).read_text()


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.xdist_group(GROUPS.get(s, f"bench-{s}")))
                                    for s in SCRIPTS])
def test_the_benchmark_runs_in_its_quick_mode(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    env["IMAGECI_TMT"] = str(REPO / ".venv-tmt" / "bin" / "tmt")  # `make test` installs it
    done = subprocess.run([sys.executable, str(BENCH / script), "--quick"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert re.match(r"^[a-z][\w -]*( \([^)]*\))?: ", last), last  # the one-line figure, `name: …`
