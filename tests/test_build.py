"""Real mmdebstrap builds: reproducibility, skip on unchanged inputs, interrupts."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imageci.build.service import build_image
from imageci.definitions.image import load_definition
from imageci.formats import lxdimage
from imageci.fs import mounts_below
from imageci.store.states import SQUASHFS

from conftest import BUILD_CACHE, EXAMPLE, IMAGECI, REPO, Env, build_example, make_env

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


def test_a_home_building_from_the_cache_takes_the_squashfs_kept_there(env: Env, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The LXD squashfs is made from the cached rootfs and the build's epoch alone: the first home to build from
    a cache entry makes it and keeps it there, the next takes it (the same bytes, the same LXD fingerprint)."""
    first = build_example(env)
    entry = tmp_path / "builds" / str(first.input_hash)
    entry.mkdir(parents=True)
    for name in ("rootfs.tar", "manifest.tsv", "build.log"):  # the entry as a build leaves it: no squashfs yet
        shutil.copyfile(BUILD_CACHE / entry.name / name, entry / name)
    made: list[Path] = []
    real = lxdimage.make_squashfs
    monkeypatch.setattr(lxdimage, "make_squashfs", lambda tree, out, at: made.append(out) or real(tree, out, at))
    got = []
    for home in ("a", "b"):
        e = make_env(tmp_path / home)
        e.settings = dataclasses.replace(e.settings, build_cache=tmp_path / "builds")
        version = build_image(load_definition(EXAMPLE / "image.yaml"), e.settings, e.catalog, e.store).version
        squash = {a.kind: a.digest for a in version.artifacts}[SQUASHFS]
        got.append((squash, json.loads(version.build_info or "{}")["lxd"]))
        e.catalog.close()
        assert len(made) == 1, home  # home b made none
    assert (entry / "root.squashfs").is_file() and got[0] == got[1]
    assert got[0][1]["fingerprint"] == json.loads(first.build_info or "{}")["lxd"]["fingerprint"]


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
