"""Reproducibility (issue 14, part 4): `imageci repro` rebuilds a version from its recorded
definition, mirror and SOURCE_DATE_EPOCH — never from the build cache — and compares the bytes.
The example image reproduces bit for bit; a deliberately non-deterministic customize step is
caught, with diffoscope's report (naming the file) stored with the version; the gate's
`reproducible` part reads the newest result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLE, Env, require_tool

pytestmark = [pytest.mark.root, pytest.mark.slow]  # three real mmdebstrap builds


def test_the_example_reproduces_and_a_clock_in_the_image_is_caught_with_a_report(env: Env, tmp_path: Path) -> None:
    require_tool(shutil.which("diffoscope") is not None, "diffoscope-minimal")
    gated = (EXAMPLE / "image.yaml").read_text().replace("    testbeds: [sandbox]\n",
                                                         "    testbeds: [sandbox]\n    reproducible: true\n")
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    for d in (good_dir, bad_dir):
        shutil.copytree(EXAMPLE, d)
    (good_dir / "image.yaml").write_text(gated)
    (bad_dir / "image.yaml").write_text(gated.replace("name: debian-bookworm-minimal", "name: stamped-minimal").replace(
        "  - run: apt-get clean", "  - run: date +%s%N > /etc/build-stamp\n  - run: apt-get clean"))
    for d in (good_dir, bad_dir):
        built = env.cli("build", str(d / "image.yaml"))
        assert built.returncode == 0, built.stdout + built.stderr
    good = f"debian-bookworm-minimal@{env.catalog.versions('debian-bookworm-minimal')[-1].serial}"
    bad = f"stamped-minimal@{env.catalog.versions('stamped-minimal')[-1].serial}"
    assert env.cli("test", good).returncode == 0 and env.cli("test", bad).returncode == 0
    never = env.cli("gate", good)
    assert never.returncode == 5 and "reproducibility: never rebuilt" in never.stdout, never.stdout

    done = env.cli("repro", good, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["reproduced"] and result["rebuilt"] == result["digest"] and result["report"] == ""
    held = env.cli("gate", good)
    assert held.returncode == 0 and "reproducibility: rebuilt bit for bit" in held.stdout, held.stdout

    caught = env.cli("repro", bad)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "not reproduced" in caught.stderr and "repro-report.txt" in caught.stderr
    assert "etc/build-stamp" in caught.stdout, caught.stdout  # the start of diffoscope's report names it
    [v] = env.catalog.versions("stamped-minimal")
    report = next(a for a in v.artifacts if a.kind == "repro-report")
    assert "etc/build-stamp" in env.store.path(report.digest).read_text()
    refused = env.cli("gate", bad)
    assert refused.returncode == 5 and "reproducibility: the rebuild of" in refused.stdout, refused.stdout
    assert env.cli("promote", bad).returncode == 5
    imported = env.cli("import", "elsewhere", str(env.store.path(v.digest)))
    assert imported.returncode == 0
    nope = env.cli("repro", "elsewhere:testing")
    assert nope.returncode == 2 and "cannot be rebuilt here" in nope.stderr, nope.stderr


def test_the_snapshot_of_the_recorded_mirror_at_its_release_date() -> None:
    from imageci.build.repro import snapshot_url

    assert snapshot_url("http://deb.debian.org/debian", "Sat, 11 Jul 2026 10:16:03 UTC") == \
        "http://snapshot.debian.org/archive/debian/20260711T101603Z/"
    assert snapshot_url("http://deb.debian.org/debian/", "Sat, 11 Jul 2026 12:16:03 +0200") == \
        "http://snapshot.debian.org/archive/debian/20260711T101603Z/"
    assert snapshot_url("http://archive.ubuntu.com/ubuntu", "Sat, 11 Jul 2026 10:16:03 UTC") is None
    assert snapshot_url("http://deb.debian.org/debian", "not a date") is None
