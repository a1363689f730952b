"""Debugging where it failed, on the sandbox and podman: a failing test's testbed held (`--hold-on-failure`),
entered by the command printed (with and without a terminal), listed, released, gone after its time, and
removed by `gc` once its holder is killed; `imageci shell` in a fresh testbed of a version. LXD and qemu:
tests/test_lxd.py, tests/test_qemu.py."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import time
from pathlib import Path

import pytest

from imageci.store.models import Version, label

from conftest import IMAGECI, Env, write_suite
from test_podman import live_containers

pytestmark = pytest.mark.root

FAILS = "#!/bin/sh\necho 'what the test saw' > /root/evidence\nexit 1\n"


def _held(e: Env) -> list[dict[str, object]]:
    return json.loads(e.cli("held", "--json", check=True).stdout)  # type: ignore[no-any-return]


def _hold(e: Env, version: Version, suite: Path, testbed: str, duration: str = "10m", *,
          listed: bool = True) -> dict[str, object]:
    done = e.cli("run", label(version), "fails", "passes", "--suite", str(suite), "--testbed", testbed,
                 "--rerun-all", f"--hold-on-failure={duration}")
    assert done.returncode == 1, done.stdout + done.stderr
    printed = re.search(r"held fails \[(\w+)\] until \S+: enter it with imageci attach (\d+) ", done.stdout)
    assert printed and printed.group(1) == testbed, done.stdout + done.stderr
    if not listed:  # a short hold may have ended before it is listed (a busy host): what was printed is the proof
        return {"id": int(printed.group(2))}
    row = next(h for h in _held(e) if h["id"] == int(printed.group(2)))
    assert (row["test"], row["testbed"], row["command"]) == ("fails", testbed, f"imageci attach {row['id']}")
    return row


def on_a_terminal(e: Env, *args: str, typed: bytes) -> tuple[int, bytes]:
    """``imageci ARGS`` on a pseudo-terminal of the test's own, ``typed`` at it: (exit status, what it showed)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(IMAGECI[0], [*IMAGECI, *args], {**e.env(), "TERM": "dumb"})
    os.write(fd, typed)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 1)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen


def _gone(testbed: str, e: Env) -> bool:
    """No testbed of this home is left (no container in its disk slots' storages, no sandbox directory)."""
    if testbed == "podman":
        return live_containers(e.home) == []
    return not list((e.home / "tmp" / "sandboxes").glob("sb-*"))


@pytest.mark.parametrize("testbed", ["sandbox", "podman"])
def test_a_failing_test_s_testbed_is_held_entered_and_released(image_env: tuple[Env, Version], tmp_path: Path,
                                                               testbed: str) -> None:
    e, version = image_env
    suite = write_suite(tmp_path / "suite", {"fails.sh": FAILS, "passes.sh": "#!/bin/sh\ntrue\n"})
    row = _hold(e, version, suite, testbed)
    hold = str(row["id"])
    entered = e.cli("attach", hold, "--", "sh", "-c", "cat /root/evidence; hostname; exit 5")
    assert entered.returncode == 5 and entered.stdout.startswith("what the test saw\n"), entered
    code, shown = on_a_terminal(e, "attach", hold, typed=b"test -t 0 && echo on-a-tty-$((6*7)); exit 3\n")
    assert code == 3 and b"on-a-tty-42" in shown, shown
    assert e.cli("release", hold).returncode == 0
    assert _held(e) == [] and e.cli("attach", hold).returncode == 2
    assert _gone(testbed, e)


def test_a_hold_ends_with_its_time_and_gc_removes_a_dead_holder_s(image_env: tuple[Env, Version],
                                                                  tmp_path: Path) -> None:
    e, version = image_env
    suite = write_suite(tmp_path / "suite", {"fails.sh": FAILS, "passes.sh": "#!/bin/sh\ntrue\n"})
    _hold(e, version, suite, "sandbox", "3s", listed=False)
    deadline = time.monotonic() + 30
    while _held(e) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _held(e) == [] and _gone("sandbox", e)
    row = _hold(e, version, suite, "sandbox")
    os.kill(int(str(row["pid"])), signal.SIGKILL)  # the holder dies: its owner token with it
    time.sleep(0.5)
    done = e.cli("gc", check=True)
    assert f"ended hold {row['id']}: its holder was gone" in done.stdout, done.stdout
    assert _held(e) == [] and _gone("sandbox", e)


@pytest.mark.parametrize("testbed", ["sandbox", "podman"])
def test_a_shell_in_a_fresh_testbed_of_a_version(image_env: tuple[Env, Version], testbed: str) -> None:
    e, version = image_env
    done = e.cli("shell", label(version), "--testbed", testbed, "--", "sh", "-c",
                 ". /etc/os-release; echo $VERSION_CODENAME; test ! -e /root/evidence; exit 4")
    assert done.returncode == 4 and done.stdout == "bookworm\n", done
    events = e.cli("events", label(version), check=True).stdout
    assert f"shell on {testbed}: sh -c" in events
    code, shown = on_a_terminal(e, "shell", label(version), "--testbed", testbed,
                                 typed=b"echo inside-$((2+3)); exit 0\n")
    assert code == 0 and b"inside-5" in shown, shown
    assert _gone(testbed, e)
