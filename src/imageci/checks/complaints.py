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

import json
import re
import time
from dataclasses import dataclass, replace

from imageci.capabilities import ISOLATION_CONTAINER, ISOLATION_MACHINE
from imageci.checks.base import Finding, Outcome
from imageci.errors import ImageciError
from imageci.testbeds.base import Testbed
from imageci.testbeds.output import unwatched
from imageci.verdicts import Verdict

OOPS, COREDUMP, FAILED_UNIT, DENIAL = "oops", "coredump", "failed-unit", "denial"
KINDS = (OOPS, COREDUMP, FAILED_UNIT, DENIAL)  # the words of a suite's ``checks: {fail_on: [...]}``
TEXT_MAX = 500
PER_KIND = 20
PROBE_TIMEOUT = 30.0
WARNING = 4  # kernel log levels 0..4: emergency .. warning
DENIED = re.compile(r'apparmor="DENIED"|avc:\s+denied')
AUDIT_TIME = re.compile(r"audit\((\d+(?:\.\d+)?):")

# $1: read the kernel's log (1/0). Prints the guest's clock and uptime, then kmsg=<record>, core=<mtime> <path>,
# failed=<when it entered failed, epoch> <unit> <description>, audit=<line>; at most 256 KiB. The host tells what
# falls in the test's window (the guest's clock is read here, once, beside the host's).
_PROBE = r"""
LC_ALL=C; export LC_ALL
now=$(date +%s.%N)
case $now in *N) now=$(date +%s) ;; esac
echo "now=$now"
echo "up=$(cut -d' ' -f1 /proc/uptime 2>/dev/null)"
{
if [ "$1" = 1 ] && [ -c /dev/kmsg ]; then
  timeout 5 dd if=/dev/kmsg iflag=nonblock bs=65536 status=none 2>/dev/null | grep -av '^ ' | tail -n 2000 \
    | sed 's/^/kmsg=/'
fi
# core files where processes run and write (cwd "/", temporary and home directories) and where the machine
# keeps them: a whole-tree walk would cost a VM under TCG seconds per test
cores() {
  timeout 10 find / -maxdepth 1 -type f \( -name core -o -name 'core.[0-9]*' \) "$@" 2>/dev/null
  for d in /tmp /var/tmp /root /home /srv /opt /var/lib/systemd/coredump /var/crash; do
    [ -d "$d" ] && timeout 10 find "$d" -xdev -type f \( -name core -o -name 'core.[0-9]*' \
      -o -path '/var/lib/systemd/coredump/*' -o -path '/var/crash/*' \) "$@" 2>/dev/null
  done
}
if find / -maxdepth 0 -printf '' 2>/dev/null; then cores -printf '%T@ %p\n'; else cores -exec stat -c '%Y %n' {} +; fi \
  | head -n 200 | sed 's/^/core=/'
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl list-units --state=failed --plain --no-legend --no-pager --full 2>/dev/null | while read -r u _l _a _s d; do
    t=$(systemctl show -p StateChangeTimestamp --value --timestamp=us+utc "$u" 2>/dev/null)
    echo "failed=$(date -d "$t" +%s.%N 2>/dev/null || echo 0) $u $d"; done
fi
if [ -r /var/log/audit/audit.log ]; then
  grep -aE 'apparmor="DENIED"|avc: +denied' /var/log/audit/audit.log 2>/dev/null | tail -n 50 | sed 's/^/audit=/'
fi
} | head -c 262144
"""
CORE_NAME = re.compile(r"(^|/)core(\.\d+)?$|^/var/lib/systemd/coredump/|^/var/crash/")


@dataclass(frozen=True)
class Window:
    """Where a test's window opened: the host's clock (Unix time) just before the test began."""

    since: float
    kernel: bool  # the testbed is a machine of its own: its kernel's log is the test's to read
    host: bool  # what the test wrote is read on the host (``Testbed.written_since``): nothing runs inside


def _lines(out: bytes) -> list[tuple[str, str]]:
    pairs = []
    for raw in out.decode("utf-8", errors="replace").splitlines():
        key, sep, value = raw.partition("=")
        if sep:
            pairs.append((key, value))
    return pairs


def opening(testbed: Testbed) -> Window:
    """The window of the test about to run (nothing runs in the testbed for it)."""
    caps = testbed.capabilities()
    kernel = ISOLATION_MACHINE in caps
    inside = kernel or ISOLATION_CONTAINER in caps  # an init of its own: units to read inside
    since = time.time()
    return Window(since, kernel, not inside and testbed.written_since(since) is not None)


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
    found: list[Finding | None] = []
    for key, value in pairs:
        if key == "kmsg":
            found.append(_kernel(value, clock))
        elif key == "core":
            path, new = _stamped(value, clock)
            found.append(Finding(COREDUMP, f"core dump: {path}") if new else None)
        elif key == "failed":
            rest, new = _stamped(value, clock)
            unit, _, description = rest.partition(" ")
            if new and unit:
                found.append(Finding(FAILED_UNIT, f"{unit} failed" + (f": {description}" if description else "")))
        elif key == "audit":
            found.append(_audit(value, clock))
    return _bounded(list(dict.fromkeys(f for f in found if f is not None)))


def _bounded(found: list[Finding]) -> list[Finding]:
    kept: list[Finding] = []
    counts: dict[str, int] = {}
    for f in found:
        counts[f.kind] = counts.get(f.kind, 0) + 1
        if counts[f.kind] <= PER_KIND:
            kept.append(Finding(f.kind, f.text[:TEXT_MAX]))
    kept += [Finding(kind, f"… and {n - PER_KIND} more") for kind, n in counts.items() if n > PER_KIND]
    return kept


def _clock(pairs: list[tuple[str, str]], window: Window, answered: float) -> _Clock | None:
    """The window on the guest's clock: its start shifted by how far the guest's clock is from the host's
    (measured against the host's clock once the probe had answered, so the window starts no later than the
    test did); None without a usable clock (no ``date``, or nonsense)."""
    said = dict(pairs)
    try:
        now, up = float(said.get("now", "")), float(said.get("up") or 0)
    except ValueError:
        return None
    return _Clock(start=window.since + (now - answered), boot=now - up)


def closing(testbed: Testbed, window: Window | None) -> list[Finding]:
    """What the test window added; nothing when the testbed cannot be read any more (a test that powered its
    machine off)."""
    if window is None:
        return []
    if window.host:
        written = testbed.written_since(window.since) or []
        return _bounded([Finding(COREDUMP, f"core dump: {p}") for p in sorted(written) if CORE_NAME.search(p)])
    try:
        with unwatched():  # (not the test's output: a live log never shows it)
            res = testbed.exec(["sh", "-c", _PROBE, "imageci-complaints", "1" if window.kernel else "0"],
                               timeout=PROBE_TIMEOUT)
    except (ImageciError, OSError):
        return []
    pairs = _lines(res.stdout)
    clock = _clock(pairs, window, time.time())
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


def encoded(found: tuple[Finding, ...] | list[Finding]) -> str | None:
    """Findings as the catalog keeps them (JSON; None: none)."""
    return json.dumps([{"kind": f.kind, "text": f.text} for f in found]) if found else None


def decoded(text: str | None) -> list[Finding]:
    """What :func:`encoded` wrote (a damaged value reads as no findings)."""
    try:
        items = json.loads(text) if text else []
    except ValueError:
        return []
    return [Finding(str(i.get("kind", "")), str(i.get("text", ""))) for i in items if isinstance(i, dict)] \
        if isinstance(items, list) else []
