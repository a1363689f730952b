"""Operations: `imageci doctor` and `imageci gc` after a crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from imageci.fs import mounts_below
from imageci.homelock import HomeLock
from imageci.store.models import Version
from imageci.testbeds.podman import leftover_containers

from conftest import IMAGECI, REPO, Env, write_suite

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")


def test_doctor_reports_what_runs_and_why_not(image_env: tuple[Env, Version]) -> None:
    e, _ = image_env
    res = e.cli("doctor", "--json")
    assert res.returncode == 0, res.stderr
    findings = {f["name"]: f for f in json.loads(res.stdout)}
    for required in ("root", "mmdebstrap", "bubblewrap", "overlayfs"):
        assert findings[required]["ok"] and findings[required]["required"]
    assert "KVM" in findings and findings["KVM"]["detail"]  # used or not, always with the reason
    assert findings["KVM"]["detail"].startswith(("used:", "not used"))
    table = e.cli("doctor")
    assert "overlayfs" in table.stdout and table.returncode == 0


def test_gc_cleans_up_after_a_killed_run(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    marker = f"gcmark{os.getpid()}"
    d = write_suite(tmp_path / "s", {"hang.sh": f"#!/bin/sh\ncp /bin/sleep /tmp/{marker}\n/tmp/{marker} 300\n"})
    testbeds = ["--testbed", "sandbox"] + (["--testbed", "podman"] if shutil.which("podman") else [])
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*IMAGECI, "test", f"{version.product.name}@{version.serial}", "--suite", str(d),
                                 *testbeds, "--rerun-all"], env=e.env(), cwd=REPO, stdout=out, stderr=out)
    want = 2 if len(testbeds) == 4 else 1
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_pids(marker)) < want and proc.poll() is None:
        time.sleep(0.2)
    if len(_pids(marker)) < want:
        proc.kill()
        proc.wait()
        e.cli("gc")
        pytest.fail(f"the hanging tests never started; imageci said:\n{log.read_text(errors='replace')}")
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    assert mounts_below(e.home), "expected a leftover sandbox mount"
    res = e.cli("gc")
    assert res.returncode == 0, res.stderr
    assert "leftover(s) removed" in res.stdout
    time.sleep(0.5)
    assert mounts_below(e.home) == []
    assert list((e.settings.tmp_dir / "sandboxes").iterdir()) == []
    assert [c for c in leftover_containers()] == []
    assert _pids(marker) == []


def test_gc_refuses_while_another_imageci_runs(env: Env) -> None:
    other = HomeLock(env.home)
    other.shared()  # as any running imageci command does
    try:
        res = env.cli("gc")
        assert res.returncode == 2 and "another imageci is running" in res.stderr
        assert env.cli("gc", "--force").returncode == 0
    finally:
        other.release()
    assert env.cli("gc").returncode == 0


def _pids(marker: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if f"/tmp/{marker}" in (p / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(p.name))
            except OSError:
                pass
    return found
