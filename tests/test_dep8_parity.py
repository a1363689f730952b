"""Verdict parity: the real autopkgtest and imageci run the DEP-8 suite of
gzip (fetched with apt-get source; `make bench` adds sed and less), bench/dep8-parity/hello
(@ without udebs, @builddeps@ with build-essential, test-name, tests as an
ordinary user, the apt archive without needs-internet, a test that finds its data
by "$0" after a cd) and bench/dep8-parity/builder (build-needed) on the same image
and must give identical per-test verdicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, require_tool

pytestmark = [pytest.mark.slow, pytest.mark.root]  # sandbox and autopkgtest unshare need root


@pytest.fixture(autouse=True, scope="module")
def _autopkgtest() -> None:
    require_tool(shutil.which("autopkgtest") is not None, "autopkgtest")


def test_same_verdicts_as_autopkgtest() -> None:
    """The benchmark itself, in its quick mode (so it is also the benchmark's run in CI)."""
    done = subprocess.run([sys.executable, str(REPO / "bench" / "dep8_vs_autopkgtest.py"), "--quick"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    verdicts = json.loads(next(line for line in lines if line.startswith("verdicts: ")).removeprefix("verdicts: "))
    mine, peer = verdicts["imageci"], verdicts["autopkgtest"]
    hello = {"at-leaves-out-udebs", "builddeps-include-build-essential", "named-command", "command1",
             "runs-as-an-ordinary-user", "needs-root-gets-the-normal-user", "archive-without-needs-internet",
             "finds-its-data-by-dollar-zero"}
    local = {f"hello/{t}" for t in hello} | {"builder-probe/sees-the-built-tree"}
    assert set(peer) >= local and len(peer) == len(local) + 1, peer  # + gzip's one test
    assert mine == peer
    assert set(mine.values()) == {"pass"}
    assert lines[-1].startswith("dep8: imageci ") and lines[-1].endswith("verdicts identical: True")
