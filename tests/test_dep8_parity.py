"""Verdict parity: the real autopkgtest and imageci run the DEP-8 suite of
gzip (fetched with apt-get source; `make bench` adds sed and less), bench/dep8-parity/hello
(@ without udebs, @builddeps@ with build-essential, test-name, tests as an
ordinary user, the apt archive without needs-internet, a test that finds its data
by "$0" after a cd) and bench/dep8-parity/builder (build-needed) on the same image
and must give identical per-test verdicts."""

from __future__ import annotations

import shutil
import sys

import pytest

from conftest import REPO, require_tool

sys.path.insert(0, str(REPO / "bench"))

pytestmark = [pytest.mark.slow, pytest.mark.root]  # sandbox and autopkgtest unshare need root


@pytest.fixture(autouse=True, scope="module")
def _autopkgtest() -> None:
    require_tool(shutil.which("autopkgtest") is not None, "autopkgtest")


def test_same_verdicts_as_autopkgtest() -> None:
    from dep8_vs_autopkgtest import compare

    mine, peer, _ours, _theirs = compare(["gzip"])
    hello = {"at-leaves-out-udebs", "builddeps-include-build-essential", "named-command", "command1",
             "runs-as-an-ordinary-user", "needs-root-gets-the-normal-user", "archive-without-needs-internet",
             "finds-its-data-by-dollar-zero"}
    local = {f"hello/{t}" for t in hello} | {"builder-probe/sees-the-built-tree"}
    assert set(peer) >= local and len(peer) == len(local) + 1, peer
    assert mine == peer
    assert set(mine.values()) == {"pass"}
