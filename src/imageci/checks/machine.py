"""Built-in checks for whole machines (VMs booted from their disk): what people
check by hand on a cloud image — cloud-init finished, the network came up, names
resolve, the machine shuts down cleanly and comes back from a reboot.

``cloud-init-done`` and ``dns-configured`` hold the guest to what the testbed
told it (``Testbed.cloud_seed``); ``clean-shutdown`` and ``reboot-works`` use
the testbed's ``power_off`` and ``reboot`` verbs. Each one's ``needs`` name the
capabilities these take, so elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from typing import TYPE_CHECKING

from imageci.capabilities import IPV6
from imageci.checks.base import Outcome, format_log
from imageci.errors import TestbedError
from imageci.verdicts import Verdict

if TYPE_CHECKING:
    from imageci.testbeds.base import Testbed

# cloud-init's log lines at these levels are errors (WARNING lines are not)
CLOUD_INIT_ERROR = re.compile(r"\[(ERROR|CRITICAL)\]|^Traceback ")
# what systemd and the kernel say when a shutdown is not clean
SHUTDOWN_BAD = re.compile(r"(A stop job is running|\[FAILED\]|Failed unmounting|Failed to (stop|finalize|deactivate)"
                          r"|[Tt]imed out|Kernel panic|Sending SIGKILL to PID)")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DNS_TRIES_S = 120.0  # systemd-resolved needs ~30 s to give up on UDP (none on the testbed's network) for TCP
SHUTDOWN_TIMEOUT_S = 90.0  # systemd's own DefaultTimeoutStopSec


def _sh(testbed: Testbed, script: str, timeout: float = 120, env: dict[str, str] | None = None
        ) -> tuple[int | None, str, bytes]:
    r = testbed.exec(["sh", "-c", script], timeout=timeout, env=env)
    return r.exit_code, r.stdout.decode("utf-8", "replace"), format_log(f"# {script}", r.stdout, r.stderr)


def _fields(text: str) -> dict[str, str]:
    """``key=value`` lines (the probes below print them) → a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


CLOUD_INIT_PROBE = """
command -v cloud-init >/dev/null || { echo installed=no; exit 0; }
echo installed=yes
echo "status=$(cloud-init status 2>/dev/null | sed -n 's/^status: *//p' | head -n1)"
echo "instance=$(cat /var/lib/cloud/data/instance-id 2>/dev/null)"
echo "hostname=$(hostname)"
echo "nonce=$(cat {nonce_file} 2>/dev/null)"
echo "result=$(tr -d '\\n' < /run/cloud-init/result.json 2>/dev/null)"
echo "--- errors in /var/log/cloud-init.log"
grep -E '\\[(ERROR|CRITICAL)\\]|^Traceback ' /var/log/cloud-init.log 2>/dev/null | head -n 20
"""


def cloud_init_done(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    seed = testbed.cloud_seed()
    if seed is None:
        return Outcome(Verdict.SKIP, f"testbed {testbed.name} sent no cloud-init seed")
    code, out, log = _sh(testbed, CLOUD_INIT_PROBE.replace("{nonce_file}", shlex.quote(seed.nonce_file)))
    got = _fields(out.split("--- errors", 1)[0])
    errors = [ln for ln in out.split("--- errors", 1)[-1].splitlines()[1:] if CLOUD_INIT_ERROR.search(ln)]
    problems = []
    if got.get("installed") != "yes":
        problems.append("cloud-init is not installed")
    else:
        if got.get("status") != "done":
            problems.append(f"cloud-init status is {got.get('status') or 'unknown'!r}, not 'done'")
        try:
            result = json.loads(got.get("result") or "null")
        except json.JSONDecodeError:
            result = None
        if not isinstance(result, dict):
            problems.append("cloud-init wrote no result (/run/cloud-init/result.json): its final stage never ran")
        else:
            v1 = result.get("v1") or {}
            problems += [f"cloud-init reported: {e}" for e in (v1.get("errors") or [])][:3]
            if "NoCloud" not in str(v1.get("datasource")):
                problems.append(f"cloud-init used the datasource {v1.get('datasource')!r}, not the NoCloud seed")
        if errors:
            problems.append(f"{len(errors)} error line(s) in /var/log/cloud-init.log; first: {errors[0][:200]}")
        if got.get("instance") != seed.instance_id:
            problems.append(f"instance id is {got.get('instance') or 'unset'!r}, not the seed's {seed.instance_id!r}")
        if got.get("hostname") != seed.hostname:
            problems.append(f"hostname is {got.get('hostname')!r}, not the user-data's {seed.hostname!r}")
        if got.get("nonce") != seed.nonce:
            problems.append(f"the user-data's write_files did not take effect ({seed.nonce_file})")
    if problems:
        return Outcome(Verdict.FAIL, "; ".join(problems), code, log)
    return Outcome(Verdict.PASS, "", code, log)


NETWORK_PROBE = """
awk 'NR > 1 && $2 == "00000000" && $8 == "00000000" { print "route4=" $1; exit }' /proc/net/route
for dev in $(awk 'NR > 1 && $2 == "00000000" && $8 == "00000000" { print $1; exit }' /proc/net/route); do
  ip -4 -o addr show dev "$dev" scope global 2>/dev/null | awk '{ print "addr4=" $4 }'
done
if [ -s /proc/net/ipv6_route ]; then
  awk '$1 == "00000000000000000000000000000000" && $2 == "00" && $10 != "lo" { print "route6=" $10; exit }' \
    /proc/net/ipv6_route
  ip -6 -o addr show scope global 2>/dev/null | awk '{ print "addr6=" $2 " " $4; exit }'
fi
command -v ip >/dev/null || echo "noip=1"
"""


def network_up(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    code, out, log = _sh(testbed, NETWORK_PROBE)
    got = _fields(out)
    problems = []
    if not got.get("route4"):
        problems.append("no IPv4 default route")
    elif got.get("noip"):
        problems.append("ip (iproute2) is not installed: cannot read the interface's addresses")
    elif not got.get("addr4"):
        problems.append(f"no global IPv4 address on {got['route4']} (the interface of the default route)")
    if IPV6 in testbed.capabilities():
        if not got.get("route6"):
            problems.append("no IPv6 default route (the testbed offers IPv6)")
        if not got.get("addr6"):
            problems.append("no global IPv6 address (the testbed offers IPv6)")
    else:
        log += f"# IPv6 not checked: testbed {testbed.name} offers none\n".encode()
    if problems:
        return Outcome(Verdict.FAIL, "; ".join(problems), code, log)
    return Outcome(Verdict.PASS, "", code, log)


def dns_configured(testbed: Testbed, opts: dict[str, str]) -> Outcome:
    seed = testbed.cloud_seed()
    if seed is None:
        return Outcome(Verdict.SKIP, f"testbed {testbed.name} serves no name to resolve")
    code, out, log = _sh(testbed, "grep -E '^[[:space:]]*nameserver[[:space:]]' /etc/resolv.conf")
    servers = [ln.split()[1] for ln in out.splitlines() if len(ln.split()) > 1]
    if not servers:
        return Outcome(Verdict.FAIL, "no resolver configured (no nameserver in /etc/resolv.conf)", code, log)
    # Through the guest's own NSS and resolver, over TCP (use-vc): the testbed's network carries no UDP.
    # Patient (30 s a try): systemd-resolved answers once it has given up on UDP for that server.
    query = f"getent ahostsv4 {shlex.quote(seed.dns_name)}"
    deadline = time.monotonic() + float(opts.get("timeout", DNS_TRIES_S))
    while True:
        code, out, more = _sh(testbed, query, timeout=80, env={"RES_OPTIONS": "use-vc timeout:30 attempts:2"})
        log += more
        addresses = {ln.split()[0] for ln in out.splitlines() if ln.split()}
        if code == 0 and seed.dns_address in addresses:
            return Outcome(Verdict.PASS, "", code, log)
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    said = f"gave {', '.join(sorted(addresses))}" if addresses else f"did not resolve (exit {code})"
    return Outcome(Verdict.FAIL, f"{seed.dns_name} (served by the testbed) {said} through the resolver "
                   f"{', '.join(servers)}", code, log)


def clean_shutdown(testbed: Testbed, opts: dict[str, str]) -> Outcome:
    limit = float(opts.get("timeout", SHUTDOWN_TIMEOUT_S))
    result = testbed.power_off(limit)
    said = ANSI.sub("", result.console)  # systemd colours its status lines
    bad = [ln.strip() for ln in said.splitlines() if SHUTDOWN_BAD.search(ln)]
    log = (f"# systemctl poweroff; the console meanwhile ({len(result.console)} bytes):\n".encode()
           + result.console[-20000:].encode())
    if result.seconds is None:
        return Outcome(Verdict.FAIL, f"the guest did not power off within {limit:.0f}s"
                       + (f"; console: {bad[0][:200]}" if bad else ""), None, log)
    if bad:
        return Outcome(Verdict.FAIL, f"powered off in {result.seconds:.0f}s, not cleanly: {bad[0][:200]}", None, log)
    return Outcome(Verdict.PASS, "", None, log + f"\n# off after {result.seconds:.1f}s\n".encode())


REBOOT_MARK = "/var/lib/imageci-reboot-works"


def reboot_works(testbed: Testbed, opts: dict[str, str]) -> Outcome:
    code, out, log = _sh(testbed, f"cat /proc/sys/kernel/random/boot_id; echo before > {REBOOT_MARK}; sync")
    before = out.split()[0] if out.split() else ""
    started = time.monotonic()
    try:
        testbed.reboot(float(opts["timeout"]) if "timeout" in opts else None)
    except TestbedError as exc:  # the guest did not come back: what this check is for
        first = str(exc).splitlines()[0]
        return Outcome(Verdict.FAIL, first, None, log + str(exc).encode())
    took = time.monotonic() - started
    code, out, more = _sh(testbed, f"cat /proc/sys/kernel/random/boot_id; cat {REBOOT_MARK}; "
                                   "systemctl is-system-running || true")
    log += more + f"# back after {took:.1f}s\n".encode()
    after = out.split()
    if not after or after[0] == before:
        return Outcome(Verdict.FAIL, "the boot id did not change: the machine did not reboot", code, log)
    if after[1:2] != ["before"]:
        return Outcome(Verdict.FAIL, f"what was written before the reboot is gone ({REBOOT_MARK})", code, log)
    return Outcome(Verdict.PASS, "", code, log)
