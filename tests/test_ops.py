"""Operations: `imageci doctor` and `imageci gc` after a crash."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imageci.fs import mounts_below
from imageci.owners import home_id, process_owner
from imageci.store.models import Version

from conftest import IMAGECI, REPO, Env, write_suite

pytestmark = pytest.mark.root


CHURN = """
import shutil, subprocess, sys
from imageci.testbeds.hostcheck import namespace_probe
churn = subprocess.Popen(["sh", "-c", "while :; do for m in 1 2 3; do mount -t tmpfs x $0/m$m; done; "
                          "for m in 1 2 3; do umount $0/m$m; done; done", sys.argv[1]])
try:
    failed = [p.stderr for p in (namespace_probe(shutil.which("bwrap")) for _ in range(200)) if p.returncode]
finally:
    churn.kill()
print(len(failed), failed[:1])
"""


def test_the_sandbox_probe_holds_while_mounts_come_and_go_on_the_host(tmp_path: Path) -> None:
    """A worker or `imageci doctor` asks whether bubblewrap works while other runs' sandboxes mount and unmount
    (as in CI, where a worker once said this host offers no sandbox): each of 200 probes still says yes. The mounts
    churn in a mount namespace of the test's own whose propagation is shared, as the host's is: a probe that bound
    the whole tree failed about one time in 25 here."""
    for m in ("m1", "m2", "m3"):
        (tmp_path / m).mkdir()
    done = subprocess.run(["unshare", "--mount", "--propagation", "shared", sys.executable, "-c", CHURN,
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("0 "), done.stdout + done.stderr


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


def _start_hanging_run(e: Env, version: Version, tmp_path: Path, marker: str, testbeds: list[str],
                       ) -> subprocess.Popen[bytes]:
    hang = f"#!/bin/sh\ncp /bin/sleep /tmp/{marker}\n/tmp/{marker} 300\n"
    d = write_suite(tmp_path / f"s-{marker}", {"hang.sh": hang, "quick.sh": "#!/bin/sh\ntrue\n"})
    log = tmp_path / f"{marker}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*IMAGECI, "test", f"{version.product.name}@{version.serial}", "--suite", str(d),
                                 *[a for tb in testbeds for a in ("--testbed", tb)], "--rerun-all", "-j", "4"],
                                env=e.env(), cwd=REPO, stdout=out, stderr=out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_pids(marker)) < len(testbeds) and proc.poll() is None:
        time.sleep(0.2)
    if len(_pids(marker)) < len(testbeds):
        proc.kill()
        proc.wait()
        e.cli("gc")
        pytest.fail(f"the hanging tests never started; imageci said:\n{log.read_text(errors='replace')}")
    return proc


def test_gc_cleans_up_after_a_killed_run_and_the_run_is_marked_aborted(image_env: tuple[Env, Version],
                                                                      tmp_path: Path) -> None:
    e, version = image_env
    marker = f"gcmark{os.getpid()}"
    testbeds = ["sandbox", "podman"]
    proc = _start_hanging_run(e, version, tmp_path, marker, testbeds)
    time.sleep(1)  # let quick.sh's attempts be recorded
    proc.send_signal(signal.SIGKILL)  # no chance to clean up
    proc.wait()
    assert mounts_below(e.home), "expected a leftover sandbox mount"
    assert list((e.settings.tmp_dir / "disks").glob("*.img")), "expected leftover disk slots"
    res = e.cli("gc")
    assert res.returncode == 0, res.stderr
    assert "leftover(s) removed" in res.stdout and "removed disk" in res.stdout
    assert re.search(r"run \d+ was aborted", res.stderr), res.stderr  # the dead run is found and ended
    time.sleep(0.5)
    mine = process_owner(e.settings.tmp_dir).token  # this pytest process shares the home
    assert [m for m in mounts_below(e.home) if mine not in m] == []
    assert [p for p in (e.settings.tmp_dir / "sandboxes").iterdir() if mine not in p.name] == []
    assert [p for p in (e.settings.tmp_dir / "disks").iterdir() if not p.name.startswith(mine)] == []
    assert _pids(marker) == []
    runs = json.loads(e.cli("results", f"{version.product.name}@{version.serial}", "--json").stdout)["runs"]
    last = runs[-1]
    assert last["status"] == "aborted" and last["ended"] is not None and last["exit_code"] is None
    assert last["tests"] == 2 and last["attempts"] >= 1  # what was recorded before the kill is kept
    events = e.cli("events", f"{version.product.name}@{version.serial}").stdout
    assert f"run {last['run']} aborted" in events


def test_gc_force_during_a_live_run_leaves_it_alone(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    marker = f"gclive{os.getpid()}"
    proc = _start_hanging_run(e, version, tmp_path, marker, ["sandbox"])
    try:
        refused = e.cli("gc")
        assert refused.returncode == 2 and "another imageci is running" in refused.stderr
        forced = e.cli("gc", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "kept what" in forced.stdout and "live imageci" in forced.stdout
        assert len(_pids(marker)) == 1 and proc.poll() is None  # its test still runs
        assert "was aborted" not in forced.stderr  # a live run is not aborted
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out  # it ended the way a Ctrl-C ends a run, not with a traceback
    assert b"Traceback" not in (tmp_path / f"{marker}.log").read_bytes()
    assert _pids(marker) == []


def test_gc_never_touches_another_home_s_cgroups_or_containers(env: Env, tmp_path: Path) -> None:
    from imageci.testbeds.limits import CGROOT, cgroup_mode, group_prefix

    if cgroup_mode() is None:
        pytest.skip("no writable cgroups")
    other = group_prefix(home_id(tmp_path / "another-home"), "0123456789ab") + "x"
    parents = [CGROOT] if cgroup_mode() == "v2" else [CGROOT / "pids", CGROOT / "memory"]
    made = [p / other for p in parents]
    for g in made:
        g.mkdir()
    try:
        res = env.cli("gc")
        assert res.returncode == 0, res.stderr
        assert all(g.is_dir() for g in made)  # not ours: untouched, even though empty and dead
    finally:
        for g in made:
            g.rmdir()


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
