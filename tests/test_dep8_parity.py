"""Verdict parity: the real autopkgtest and imageci run the DEP-8 suites of
gzip, sed and less (fetched with apt-get source) on the same image and must
give identical per-test verdicts."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="sandbox and autopkgtest unshare need root"),
    pytest.mark.skipif(shutil.which("autopkgtest") is None and not os.environ.get("CI"),
                       reason="autopkgtest not installed (scripts/host-setup.sh --test)"),
]


def test_same_verdicts_as_autopkgtest() -> None:
    from dep8_vs_autopkgtest import compare

    mine, peer, _ours, _theirs = compare()
    assert set(peer) == {"simple-gzip", "sub", "command1"}, peer
    assert mine == peer
    assert set(mine.values()) == {"pass"}
