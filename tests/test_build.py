"""Real mmdebstrap builds: reproducibility, skip on unchanged inputs, interrupts."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from imageci.fs import mounts_below

from conftest import EXAMPLE, IMAGECI, REPO, Env, build_example

pytestmark = pytest.mark.root


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
