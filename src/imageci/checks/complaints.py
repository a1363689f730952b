"""The machine's own complaints around every test: what the test window added to the kernel's log
(warnings and worse: oops, BUG, call traces, OOM kills), new core dumps, units that entered
``failed``, and AVC or AppArmor denials — as tmt, kola and lxc-ci look for them.

Read through the testbed protocol only, so every backend gets the same reading, and at most one command per
test: the window opens on the host's clock (nothing runs then); when it closes, one probe in the testbed
prints what the machine holds with its times, and the host keeps what falls in the window (the guest's clock
is measured against the host's in the same probe). Where the host sees what the test wrote
(``Testbed.written_since``: a copy-on-write layer) and the testbed has no init or kernel of its own, no
command runs at all. What a testbed has decides what is read: the kernel's log only on whole machines (a
container shares the host's kernel, whose messages are not its test's), units where systemd runs, core files
everywhere. What the testbed prints is untrusted: bounded, parsed defensively, each finding cut to
:data:`TEXT_MAX` characters, at most :data:`PER_KIND` per kind.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

from imageci.capabilities import ISOLATION_CONTAINER, ISOLATION_MACHINE
from imageci.checks.base import Outcome
from imageci.checks.findings import COREDUMP, DENIAL, FAILED_UNIT, OOPS, Finding
from imageci.checks.findings import decoded as decoded  # re-exported: where the engine reads them back
from imageci.checks.findings import encoded as encoded
from imageci.errors import ImageciError
from imageci.testbeds.base import Testbed
from imageci.testbeds.output import unwatched
from imageci.verdicts import Verdict

TEXT_MAX = 500
PER_KIND = 20
PROBE_TIMEOUT = 30.0
WARNING = 4  # kernel log levels 0..4: emergency .. warning
DENIED = re.compile(r'apparmor="DENIED"|avc:\s+denied')
AUDIT_TIME = re.compile(r"audit\((\d+(?:\.\d+)?):")

# $1: read the kernel's log (1/0). Prints the guest's clock and uptime, then core=<mtime> <path>, each failed
# unit's Id=, Description= and StateChangeTimestampMonotonic= (as systemctl shows them) and audit=<line> (at most
# 64 KiB), then a line imageci-kmsg and the kernel's log as it is (its newest 192 KiB kept by the host). The host
# tells what falls in the test's window (the guest's clock is read here, once, beside the host's). Few processes
# (each costs a VM under TCG some 50 ms): the shell's own builtins where they do, one find, one systemctl, one dd.
# It exits 0 (dd ends the kernel's log with EAGAIN, status 1): a VM's testbed asks a machine whose command failed
# whether its disk is full, one session more (0.2 s under TCG) per test.
_PROBE = r"""
LC_ALL=C; export LC_ALL
kernel=$1
now=$(date +%s.%N)
case $now in *N) now=$(date +%s) ;; esac
read -r up _ 2>/dev/null < /proc/uptime
echo "now=$now"
echo "up=$up"
{
set --
for f in /core /core.[0-9]*; do [ -f "$f" ] && set -- "$@" "$f"; done
for d in /tmp /var/tmp /root /home /srv /opt /var/lib/systemd/coredump /var/crash; do
  [ -d "$d" ] && set -- "$@" "$d"
done
# (core files where processes run and write, and where the machine keeps them: a whole-tree walk would cost
# a VM under TCG seconds per test)
if [ $# -gt 0 ]; then
  set -- "$@" -xdev -type f \( -name core -o -name 'core.[0-9]*' -o -path '/var/lib/systemd/coredump/*' \
    -o -path '/var/crash/*' \)
  if [ -L /usr/bin/find ] || [ -L /bin/find ]; then find "$@" -exec stat -c 'core=%Y %n' {} + 2>/dev/null
  else find "$@" -printf 'core=%T@ %p\n' 2>/dev/null; fi
fi
if [ -d /run/systemd/system ]; then
  systemctl show --state=failed -p Id -p Description -p StateChangeTimestampMonotonic '*' 2>/dev/null
fi
if [ -r /var/log/audit/audit.log ]; then
  sed -n '/apparmor="DENIED"\|avc: *denied/s/^/audit=/p' /var/log/audit/audit.log 2>/dev/null
fi
} | head -c 65536
if [ "$kernel" = 1 ] && [ -c /dev/kmsg ]; then
  printf '\nimageci-kmsg\n'
  dd if=/dev/kmsg iflag=nonblock bs=65536 status=none 2>/dev/null
fi
exit 0
"""
KMSG_MARK = b"\nimageci-kmsg\n"  # what the probe prints before the kernel's log
KMSG_KEPT = 196608
CORE_NAME = re.compile(r"(^|/)core(\.\d+)?$|^/var/lib/systemd/coredump/|^/var/crash/")


@dataclass(frozen=True)
class Window:
    """Where a test's window opened: the host's clock (Unix time) just before the test began."""

    since: float
    kernel: bool  # the testbed is a machine of its own: its kernel's log is the test's to read
    host: bool  # what the test wrote is read on the host if it can be (``Testbed.written_since``): nothing runs


def _lines(out: bytes) -> list[tuple[str, str]]:
    """The probe's ``key=value`` lines, then each record of the kernel's log (its newest ``KMSG_KEPT`` bytes,
    the first record kept whole or not at all; a record's continuation lines, which begin with a space, left
    out) as ``("kmsg", record)``."""
    head, _, kmsg = out.partition(KMSG_MARK)
    pairs = []
    for raw in head.decode("utf-8", errors="replace").splitlines():
        key, sep, value = raw.partition("=")
        if sep:
            pairs.append((key, value))
    if len(kmsg) > KMSG_KEPT:
        kmsg = kmsg[-KMSG_KEPT - 1:].partition(b"\n")[2]
    return pairs + [("kmsg", line) for line in kmsg.decode("utf-8", errors="replace").splitlines()
                    if line and not line.startswith(" ")]


def opening(testbed: Testbed) -> Window:
    """The window of the test about to run (nothing runs in the testbed for it)."""
    caps = testbed.capabilities()
    kernel = ISOLATION_MACHINE in caps
    inside = kernel or ISOLATION_CONTAINER in caps  # an init of its own: units to read inside
    return Window(time.time(), kernel, not inside)


@dataclass(frozen=True)
class _Clock:
    """The guest's clock against the window: ``start`` is the window's start on the guest's clock (at the
    earliest: the host's clock read after the probe answered), ``boot`` when the guest booted."""

    start: float
    boot: float


def _kernel(value: str, clock: _Clock) -> Finding | None:
    """One kernel log record (``prio,seq,usec,flags;text``) of the window worth reporting, else None."""
    head, sep, text = value.partition(";")
    fields = head.split(",")
    if not sep or len(fields) < 3 or not all(f.isdigit() for f in fields[:3]):
        return None
    if clock.boot + int(fields[2]) / 1e6 < clock.start:
        return None
    if DENIED.search(text):
        return Finding(DENIAL, text)
    if int(fields[0]) & 7 <= WARNING:
        return Finding(OOPS, f"kernel: {text}")
    return None


def _stamped(value: str, clock: _Clock) -> tuple[str, bool]:
    """``<epoch> <rest>`` → (rest, whether the epoch falls in the window)."""
    stamp, _, rest = value.partition(" ")
    try:
        return rest, float(stamp) >= clock.start
    except ValueError:
        return rest, False


def _audit(value: str, clock: _Clock) -> Finding | None:
    when = AUDIT_TIME.search(value)
    return Finding(DENIAL, value) if when is not None and float(when.group(1)) >= clock.start else None


def _found(pairs: list[tuple[str, str]], clock: _Clock) -> list[Finding]:
    found: list[Finding | None] = [*_failed_units(pairs, clock)]
    for key, value in pairs:
        if key == "kmsg":
            found.append(_kernel(value, clock))
        elif key == "core":
            path, new = _stamped(value, clock)
            found.append(Finding(COREDUMP, f"core dump: {path}") if new else None)
        elif key == "audit":
            found.append(_audit(value, clock))
    return _bounded(list(dict.fromkeys(f for f in found if f is not None)))


def _failed_units(pairs: list[tuple[str, str]], clock: _Clock) -> list[Finding]:
    """The units ``systemctl show --state=failed`` listed (blocks that begin with ``Id=``) that failed in the
    window (their state changed then, on the guest's monotonic clock)."""
    units: list[dict[str, str]] = []
    for key, value in pairs:
        if key == "Id":
            units.append({})
        if key in ("Id", "Description", "StateChangeTimestampMonotonic") and units:
            units[-1][key] = value
    found = []
    for unit in units:
        mono = unit.get("StateChangeTimestampMonotonic", "")
        if mono.isdigit() and int(mono) and clock.boot + int(mono) / 1e6 >= clock.start and unit.get("Id"):
            described = unit.get("Description")
            found.append(Finding(FAILED_UNIT, f"{unit['Id']} failed" + (f": {described}" if described else "")))
    return found


def _bounded(found: list[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    counts: dict[str, int] = {}
    for f in found:
        counts[f.kind] = counts.get(f.kind, 0) + 1
        if counts[f.kind] <= PER_KIND:
            kept.append(Finding(f.kind, f.text[:TEXT_MAX]))
    kept += [Finding(kind, f"… and {n - PER_KIND} more") for kind, n in counts.items() if n > PER_KIND]
    return kept


def _clock(pairs: list[tuple[str, str]], window: Window, asked: float, answered: float) -> _Clock | None:
    """The window on the guest's clock: its start shifted by how far the guest's clock is from the host's
    (measured against the host's clock once the probe had answered, so the window starts no later than the
    test did); None without a usable clock (no ``date``, or nonsense). A container whose clock read between
    the probe's asking and its answer reads the host's own clock: no shift (the probe's round trip would
    otherwise reach back into the test before, with what it left)."""
    said = dict(pairs)
    try:
        now, up = float(said.get("now", "")), float(said.get("up") or 0)
    except ValueError:
        return None
    shared = not window.kernel and asked <= now <= answered
    return _Clock(start=window.since + (0.0 if shared else now - answered), boot=now - up)


def closing(testbed: Testbed, window: Window | None) -> list[Finding]:
    """What the test window added; nothing when the testbed cannot be read any more (a test that powered its
    machine off)."""
    if window is None:
        return []
    written = testbed.written_since(window.since) if window.host else None
    if written is not None:
        return _bounded([Finding(COREDUMP, f"core dump: {p}") for p in sorted(written) if CORE_NAME.search(p)])
    asked = time.time()
    try:
        with unwatched():  # (not the test's output: a live log never shows it)
            res = testbed.exec(["sh", "-c", _PROBE, "imageci-complaints", "1" if window.kernel else "0"],
                               timeout=PROBE_TIMEOUT)
    except (ImageciError, OSError):
        return []
    pairs = _lines(res.stdout)
    clock = _clock(pairs, window, asked, time.time())
    return _found(pairs, clock) if clock is not None else []


def judged(outcome: Outcome, found: list[Finding], fail_on: frozenset[str]) -> Outcome:
    """The outcome with its findings: kept with it and written at the end of its log; a finding whose
    kind is in ``fail_on`` fails a test that passed, with the finding as the reason."""
    if not found:
        return outcome
    log = outcome.log + b"".join(f"# finding: {f.kind}: {f.text}\n".encode() for f in found)
    failing = next((f for f in found if f.kind in fail_on), None)
    if failing is not None and outcome.verdict == Verdict.PASS:
        return replace(outcome, verdict=Verdict.FAIL, reason=f"the machine complained ({failing.kind}): "
                       f"{failing.text}", log=log, findings=outcome.findings + tuple(found))
    return replace(outcome, log=log, findings=outcome.findings + tuple(found))
