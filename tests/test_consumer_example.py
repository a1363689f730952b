"""The shipped example, end to end on real Debian images: python-runtime (bookworm, Python 3.11) is stable;
the thumbnailer application registers as a gating consumer; the next version (built from trixie, Python
3.13) passes the image's own suite, breaks the application (imghdr is gone), is not promoted, and the
report names python3's bump. The application's own pre-deploy check says the same before running
anything."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, Env

pytestmark = [pytest.mark.root, pytest.mark.slow]

APP = REPO / "examples" / "consumers" / "thumbnailer"
COMMAND = "python3 -m unittest discover -s tests -v"


def test_a_runtime_bump_that_breaks_an_application_is_not_promoted_and_python3_is_named(env: Env) -> None:
    first = env.cli("pipeline", "examples/python-runtime/image.yaml", timeout=1800)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "promoted python-runtime@" in first.stdout

    added = env.cli("consumers", "add", "thumbnailer", "--image", "python-runtime", "--gating", "--suite", str(APP),
                    "--command", COMMAND)
    assert added.returncode == 0, added.stderr
    before = env.cli("check-consumer", "python-runtime:stable", str(APP), "--command", COMMAND)
    assert before.returncode == 0, before.stdout + before.stderr
    assert re.search(r"met: \.python-version:1 wants python 3\.11; the image has python 3\.11\.\d+ \(python3 3\.11",
                     before.stdout)

    bump = env.cli("pipeline", "examples/python-runtime-bump/image.yaml", timeout=1800)
    out = bump.stdout + bump.stderr
    assert bump.returncode == 1, out  # the image's suite passed; its consumer did not
    assert re.search(r"pass\s+python-works \[sandbox\]", bump.stdout), out
    assert re.search(r"fail\s+consumer:thumbnailer \[sandbox\]", bump.stdout), out
    assert "No module named 'imghdr'" in env.cli("log", "python-runtime:testing", "consumer:thumbnailer").stdout
    assert "consumer thumbnailer (gating)" in bump.stderr and "broken by this version" in bump.stderr
    assert re.search(r"likely cause: python3 3\.11\.\S+ → 3\.13\.\S+ \(\.python-version:1 declares python 3\.11\)",
                     bump.stderr), bump.stderr
    assert "not promoted" in bump.stderr
    assert env.cli("promote", "python-runtime:testing").returncode == 5

    after = env.cli("check-consumer", "python-runtime:testing", str(APP), "--command", COMMAND)
    assert after.returncode == 11, after.stdout + after.stderr
    assert re.search(r"\.python-version:1 wants python 3\.11; the image has python 3\.13\.\d+", after.stderr)
    assert "consumer:thumbnailer" not in after.stdout  # nothing ran
