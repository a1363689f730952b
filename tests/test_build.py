"""Real mmdebstrap builds: reproducibility, skip on unchanged inputs, interrupts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imageci.build.inputs import MirrorState
from imageci.build.mmdebstrap import BuildPlan
from imageci.definitions.image import load_definition
from imageci.fs import mounts_below

from conftest import EXAMPLE, IMAGECI, REPO, Env, build_example

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root builds (mmdebstrap --mode=root)")


def test_build_command_carries_definition_and_hygiene(tmp_path: Path) -> None:
    d = load_definition(EXAMPLE / "image.yaml").definition
    plan = BuildPlan(d, MirrorState(d.mirror, d.suite, "x", 1752228997), tmp_path)
    argv = plan.command()
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv and "--include=tzdata,ca-certificates" in argv
    assert any("resolv.conf" in a for a in argv)  # host files never ship
    assert argv[-3:] == ["bookworm", str(tmp_path / "rootfs.tar"), "http://deb.debian.org/debian"]
    assert plan.source_date_epoch == 1752228997  # the mirror's Release date pins timestamps


@pytest.mark.slow
def test_forced_rebuild_is_bit_identical(env: Env) -> None:
    """--force bypasses the skip and the cache: a real mmdebstrap run whose
    output must equal the first build byte for byte."""
    first = build_example(env)
    res = env.cli("build", "--force", str(EXAMPLE / "image.yaml"), timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "rebuilt bit-identical" in res.stdout and first.digest[:12] in res.stdout
    assert len(env.catalog.versions("debian-bookworm-minimal")) == 1
    assert list(env.settings.tmp_dir.glob("build-*")) == []


@pytest.mark.slow
def test_interrupted_build_registers_nothing_and_cleans_up(env: Env, tmp_path: Path) -> None:
    text = (EXAMPLE / "image.yaml").read_text().replace("  - ca-certificates\n", "  - ca-certificates\n  - less\n")
    (tmp_path / "suite").mkdir()
    definition = tmp_path / "image.yaml"
    definition.write_text(text.replace("suite: suite", f"suite: {tmp_path / 'suite'}"))
    proc = subprocess.Popen([*IMAGECI, "build", "--force", str(definition)], env=env.env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(env.settings.tmp_dir.glob("build-*/mmdebstrap.*")):
        time.sleep(0.2)
    time.sleep(3)  # mmdebstrap is now downloading/unpacking into its chroot
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert env.catalog.versions() == []
    assert list(env.settings.tmp_dir.glob("build-*")) == []
    assert mounts_below(env.settings.tmp_dir) == []
    assert list(env.store.tmp.iterdir()) == []
