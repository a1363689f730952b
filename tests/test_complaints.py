"""The machine's own complaints around every test (``checks.complaints``) on the sandbox and podman: a
core dump is found in the window of the test that made it, never in the next one's, kept with the attempt
(catalog, results, log, JUnit), and fails the test only where the suite says ``fail_on``. The kernel's and
systemd's complaints need a machine of their own: tests/test_qemu.py and tests/test_lxd.py."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from imageci.checks import complaints
from imageci.checks.base import Finding, Outcome
from imageci.checks.script import ScriptCheck
from imageci.definitions.suite import load_suite
from imageci.engine.runner import Engine
from imageci.store.models import Version, label
from imageci.testbeds.registry import make_backend
from imageci.verdicts import Verdict

from conftest import Env, write_suite

pytestmark = pytest.mark.root

CRASH = "#!/bin/sh\nulimit -c unlimited\ncd /tmp\nsh -c 'kill -SEGV $$'\nexit 0\n"

QUIET = "#!/bin/sh\ntrue\n"


def _suite(tmp_path: Path, suite_yaml: str = "") -> Path:
    # "fresh: suite" keeps one testbed for both: the window, not a new testbed, keeps the crash to its test
    return write_suite(tmp_path / "suite", {"a-crash.sh": CRASH, "b-quiet.sh": QUIET},
                       "fresh: suite\n" + suite_yaml)


def _run(e: Env, version: Version, suite_dir: Path, testbed: str, jobs: int = 1) -> dict[str, Outcome]:
    suite = load_suite(suite_dir)
    engine = Engine(e.catalog, e.store, {testbed: make_backend(testbed, e.settings)}, jobs=jobs, fresh=suite.fresh,
                    fail_on=suite.fail_on, complaints=suite.complaints)
    report = engine.run(version, [ScriptCheck(s) for s in suite.tests], [testbed])
    out = {}
    for r in report.results:
        a = r.attempts[-1]
        out[r.test_id] = Outcome(Verdict(a.verdict), a.reason, a.exit_code,
                                 e.store.read_bytes(a.log_digest) if a.log_digest else b"",
                                 tuple(complaints.decoded(a.findings)))
    return out


@pytest.mark.parametrize("testbed", ["sandbox", "podman"])
def test_a_core_dump_is_found_in_its_own_window_only(image_env: tuple[Env, Version], tmp_path: Path,
                                                     testbed: str) -> None:
    e, version = image_env
    got = _run(e, version, _suite(tmp_path), testbed)
    crash, quiet = got["a-crash"], got["b-quiet"]
    assert crash.verdict == Verdict.PASS, crash  # reported, not failing, by default
    assert [f.kind for f in crash.findings] == ["coredump"] and crash.findings[0].text == "core dump: /tmp/core"
    assert b"# finding: coredump: core dump: /tmp/core\n" in crash.log
    assert quiet.verdict == Verdict.PASS and quiet.findings == ()  # the core is still there: not its window


def test_fail_on_fails_the_test_with_the_finding_as_its_reason(image_env: tuple[Env, Version],
                                                               tmp_path: Path) -> None:
    e, version = image_env
    suite = _suite(tmp_path, "checks:\n  fail_on: [coredump, oops]\n")
    got = _run(e, version, suite, "sandbox")
    assert got["a-crash"].verdict == Verdict.FAIL
    assert got["a-crash"].reason == "the machine complained (coredump): core dump: /tmp/core"
    assert got["b-quiet"].verdict == Verdict.PASS
    # the suite's word is checked: an unknown kind is an error with file:line
    (suite / "suite.yaml").write_text("checks:\n  fail_on: [coredumps]\n")
    r = e.cli("test", "--suite", str(suite), label(version))
    assert r.returncode == 2 and "suite.yaml:2" in r.stderr, r.stderr


def test_findings_reach_results_the_log_and_junit(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    suite = write_suite(tmp_path / "suite", {"crash.sh": CRASH})
    junit = tmp_path / "junit.xml"
    r = e.cli("test", "--suite", str(suite), "--junit", str(junit), label(version))
    assert r.returncode == 0, r.stderr
    shown = json.loads(e.cli("results", "--json", label(version), "crash", check=True).stdout)
    assert shown["attempts"][-1]["findings"] == [{"kind": "coredump", "text": "core dump: /tmp/core"}]
    assert "coredump: core dump: /tmp/core" in e.cli("results", label(version), "crash", check=True).stdout
    assert "# finding: coredump: core dump: /tmp/core" in e.cli("log", label(version), "crash", check=True).stdout
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props["imageci.findings:crash"] == "coredump: core dump: /tmp/core"


def test_what_a_testbed_prints_is_bounded_and_windowed() -> None:
    """The probe's output is the test's to shape: parsed defensively, windowed by the guest's clock (measured
    against the host's in the same probe) and the kernel log's times."""
    window = complaints.Window(since=1_700_000_100.0, kernel=True, host=False)
    # the guest's clock runs 50 s behind the host's; it booted 1000 s before the probe
    lines = [("now", "1700000060.0"), ("up", "1000.0"),
             ("kmsg", "4,41,989000000,-;before the window"), ("kmsg", "6,42,991000000,-;an info line"),
             ("kmsg", "3,43,992000000,-;BUG: kernel NULL pointer dereference"),
             ("kmsg", '5,44,993000000,-;audit: type=1400 apparmor="DENIED" operation="open"'),
             ("kmsg", "garbage"), ("kmsg", "x,y,z;nonsense"),
             # systemctl show's blocks, on the guest's monotonic clock (µs since boot)
             ("Id", "old.service"), ("Description", "was failed before"),
             ("StateChangeTimestampMonotonic", "980500000"),
             ("Id", "new.service"), ("Description", "A unit"), ("StateChangeTimestampMonotonic", "991000000"),
             ("Id", "x.service"), ("StateChangeTimestampMonotonic", "nonsense"), ("Description", "Id=y"),
             ("audit", "type=AVC msg=audit(1700000049.0:1): avc:  denied { read }"),
             ("audit", "type=AVC msg=audit(1700000055.0:2): avc:  denied { write }")]
    lines += [("core", f"1700000052.{n} /tmp/core.{n}") for n in range(30)] + [("core", "1700000001 /old/core")]
    found = complaints._found(lines, complaints._clock(lines, window, 1_700_000_109.0, 1_700_000_110.0))  # noqa: SLF001
    assert found[:5] == [Finding("failed-unit", "new.service failed: A unit"),
                         Finding("oops", "kernel: BUG: kernel NULL pointer dereference"),
                         Finding("denial", 'audit: type=1400 apparmor="DENIED" operation="open"'),
                         Finding("denial", "type=AVC msg=audit(1700000055.0:2): avc:  denied { write }"),
                         Finding("coredump", "core dump: /tmp/core.0")]
    assert len([f for f in found if f.kind == "coredump"]) == complaints.PER_KIND + 1
    assert found[-1] == Finding("coredump", "… and 10 more")
    clock = complaints._clock([("now", "1700000200"), ("up", "5")], window, 0.0, 1_700_000_100.0)  # noqa: SLF001
    long = complaints._found([("core", "1700000200 " + "x" * 5000)], clock)  # type: ignore[arg-type]  # noqa: SLF001
    assert long[0].text == ("core dump: " + "x" * 5000)[:500]
    assert complaints._clock([("now", "soon")], window, 0.0, 0.0) is None  # noqa: SLF001


def test_the_kernel_s_log_is_read_as_the_kernel_wrote_it_and_only_its_newest_part_kept() -> None:
    """The probe prints the kernel's log as /dev/kmsg gives it (no filter process in the guest: each costs a VM
    under TCG some 50 ms): the host takes its records, not their continuation lines, the newest 192 KiB of it,
    and the probe's own lines before it (cut off mid-line by the probe's bound or not)."""
    record = b"4,%d,991000000,-;imageci: record %d with apparmor=\"DENIED\" in it\n SUBSYSTEM=pci\n DEVICE=+pci:0\n"
    kmsg = b"".join(record % (n, n) for n in range(5000))
    out = b"now=1700000060.0\nup=1000.0\ncore=1700000052 /tmp/core\nId=x.serv" + complaints.KMSG_MARK + kmsg
    pairs = complaints._lines(out)  # noqa: SLF001
    assert pairs[:4] == [("now", "1700000060.0"), ("up", "1000.0"), ("core", "1700000052 /tmp/core"), ("Id", "x.serv")]
    records = [v for k, v in pairs[4:] if k == "kmsg"]
    assert len(records) == len(pairs) - 4 and records[-1] == '4,4999,991000000,-;imageci: record 4999 with ' \
        'apparmor="DENIED" in it'
    assert 0 < sum(len(r) + 1 for r in records) <= complaints.KMSG_KEPT < len(kmsg)
    assert all(r.startswith("4,") and r.endswith(" in it") for r in records)  # whole records, the first one too
    assert complaints._lines(b"now=1\n") == [("now", "1")]  # a container: no kernel log  # noqa: SLF001


def test_the_probe_exits_0_on_a_machine_with_a_kernel_log() -> None:
    """Run as a VM runs it, on a kernel log (the host's, read-only; the trees it looks for core files in are
    empty tmpfs): it prints the log and exits 0 — reading /dev/kmsg ends with EAGAIN, and a VM's testbed asks a
    machine whose command failed whether its disk is full (a session more per test)."""
    empty = "for d in /tmp /var/tmp /root /home /srv /opt; do [ -d $d ] && mount -t tmpfs none $d; done; "
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           empty + 'exec sh -c "$1" imageci-complaints 1', "sh", complaints._PROBE],  # noqa: SLF001
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert complaints.KMSG_MARK in done.stdout and done.stdout.startswith(b"now=")


def test_a_container_s_window_starts_when_its_test_did() -> None:
    """A container reads the host's clock: the closing probe's round trip (seconds on a busy host) does not
    reach back into the test before it, whose core dump is not this test's; a machine's clock is shifted."""
    container = complaints.Window(since=1_700_000_100.0, kernel=False, host=False)
    before = [("now", "1700000104.0"), ("up", "5"), ("core", "1700000099.5 /var/tmp/core")]  # the last test's
    assert complaints._found(before, complaints._clock(before, container, 1_700_000_103.0, 1_700_000_106.0)) == []  # type: ignore[arg-type]  # noqa: SLF001
    own = [*before[:2], ("core", "1700000100.5 /var/tmp/core")]
    assert complaints._found(own, complaints._clock(own, container, 1_700_000_103.0, 1_700_000_106.0)) == [  # type: ignore[arg-type]  # noqa: SLF001
        Finding("coredump", "core dump: /var/tmp/core")]
    machine = complaints.Window(since=1_700_000_100.0, kernel=True, host=False)  # its own clock: shifted, early
    clock = complaints._clock(before, machine, 1_700_000_103.0, 1_700_000_106.0)  # noqa: SLF001
    assert clock is not None and clock.start == 1_700_000_098.0
