"""Built-in checks any suite can name in its ``suite.yaml``::

    builtins:
      - boot-multi-user
      - no-failed-units
      - console-clean
      - login-works
      - name: journal-clean
        priority: warning        # default: err
      - hygiene                  # the seven image-hygiene checks, one result each
      - name: setuid-allowlist
        allow: /usr/local/bin/helper
      - name: release-stamp
        path: /etc/imageci-release   # the default
        keys: IMAGE_NAME,IMAGE_FAMILY
      - cloud-init-done          # whole machines (checks/machine.py): cloud-init,
      - network-up               # the network, names,
      - dns-configured
      - name: clean-shutdown     # a power-off (timeout: seconds, default 90)
        timeout: 60
      - reboot-works             # and a reboot

They run on any testbed whose capabilities meet their needs; elsewhere they
are skipped with the reason, like any test.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imageci.capabilities import CLOUD_INIT, ISOLATION_CONTAINER, ISOLATION_MACHINE, PRISTINE, REBOOT
from imageci.checks import hygiene, machine
from imageci.checks.base import Check, Outcome, format_log
from imageci.definitions.limits import Limits
from imageci.definitions.suite import SUITE_FILE, Suite
from imageci.errors import SourceError
from imageci.verdicts import Verdict

if TYPE_CHECKING:
    from imageci.testbeds.base import Testbed

BUILTIN_VERSION = "1"
CONSOLE_BAD = re.compile(r"(Kernel panic|Oops:|BUG: |Call Trace:|general protection fault|segfault at )")
JOURNAL_PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def _sh(testbed: Testbed, script: str, timeout: float = 120) -> tuple[int | None, str, bytes]:
    r = testbed.exec(["sh", "-c", script], timeout=timeout)
    return r.exit_code, r.stdout.decode("utf-8", "replace"), format_log(f"# {script}", r.stdout, r.stderr)


def boot_multi_user(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    code, out, log = _sh(testbed, "systemctl is-system-running --wait; systemctl is-active multi-user.target")
    lines = out.split()
    if lines[:1] == ["running"] and lines[1:2] == ["active"]:
        return Outcome(Verdict.PASS, "", code, log)
    return Outcome(Verdict.FAIL, f"system state {' / '.join(lines) or 'unknown'} (want running / active)", code, log)


def no_failed_units(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    code, out, log = _sh(testbed, "systemctl list-units --failed --no-legend --plain --all | awk '{print $1}'")
    failed = out.split()
    if code == 0 and not failed:
        return Outcome(Verdict.PASS, "", code, log)
    return Outcome(Verdict.FAIL, f"failed units: {', '.join(failed)}" if failed else f"systemctl exit {code}",
                   code, log)


def login_works(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    code, out, log = _sh(testbed, "exec sh -lc 'id -un; echo \"$HOME\"'")
    got = out.split()
    if code == 0 and got[:1] == ["root"]:
        return Outcome(Verdict.PASS, "", code, log)
    return Outcome(Verdict.FAIL, f"login shell gave {out.strip()!r} (exit {code})", code, log)


def journal_clean(testbed: Testbed, opts: dict[str, str]) -> Outcome:
    prio = opts.get("priority", "err")
    code, out, log = _sh(testbed, f"journalctl -b -p {prio} --no-pager -q -o short-monotonic")
    entries = [ln for ln in out.splitlines() if ln.strip()]
    if code == 0 and not entries:
        return Outcome(Verdict.PASS, "", code, log)
    if code != 0:
        return Outcome(Verdict.FAIL, f"journalctl exit {code}", code, log)
    return Outcome(Verdict.FAIL, f"{len(entries)} journal entr{'y' if len(entries) == 1 else 'ies'} at priority "
                   f"{prio} or worse; first: {entries[0][:200]}", code, log)


def console_clean(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    text = testbed.console_log()
    if text is None:
        return Outcome(Verdict.SKIP, f"testbed {testbed.name} has no console log")
    bad = [ln.strip() for ln in text.splitlines() if CONSOLE_BAD.search(ln)]
    log = f"# console log ({len(text)} bytes checked)\n".encode() + "\n".join(bad).encode()
    if bad:
        return Outcome(Verdict.FAIL, f"console shows: {bad[0][:200]}", None, log)
    return Outcome(Verdict.PASS, "", None, log)


@dataclass(frozen=True)
class BuiltinSpec:
    run: Callable[[Testbed, dict[str, str]], Outcome]
    needs: tuple[str, ...]
    description: str
    options: tuple[str, ...] = ()


BUILTINS: dict[str, BuiltinSpec] = {
    "boot-multi-user": BuiltinSpec(boot_multi_user, (ISOLATION_CONTAINER,),
                                   "systemd finished starting (running) and multi-user.target is active"),
    "no-failed-units": BuiltinSpec(no_failed_units, (ISOLATION_CONTAINER,), "no systemd unit failed"),
    "login-works": BuiltinSpec(login_works, (), "a root login shell starts"),
    "journal-clean": BuiltinSpec(journal_clean, (ISOLATION_CONTAINER,),
                                 "no journal entries at the priority or worse this boot", ("priority",)),
    "console-clean": BuiltinSpec(console_clean, (ISOLATION_MACHINE,),
                                 "no kernel oops, panic, BUG or segfault on the console"),
    "cloud-init-done": BuiltinSpec(machine.cloud_init_done, (CLOUD_INIT,),
                                   "cloud-init finished (done, no errors in its log) and applied the testbed's "
                                   "user-data (instance id, hostname, a file it wrote)"),
    "network-up": BuiltinSpec(machine.network_up, (ISOLATION_MACHINE,),
                              "a default route and a global IPv4 address on its interface (IPv6 where offered)"),
    "dns-configured": BuiltinSpec(machine.dns_configured, (CLOUD_INIT,),
                                  "a resolver is configured and resolves a name the testbed serves", ("timeout",)),
    "clean-shutdown": BuiltinSpec(machine.clean_shutdown, (REBOOT,),
                                  "the guest powers off within the timeout (default 90 s) with no failed stop jobs",
                                  ("timeout",)),
    "reboot-works": BuiltinSpec(machine.reboot_works, (REBOOT,),
                                "the guest comes back from a reboot: a new boot id, its disk kept", ("timeout",)),
    "no-ssh-host-keys": BuiltinSpec(hygiene.no_ssh_host_keys, (PRISTINE,), "no SSH host keys in the image"),
    "machine-id-uninitialized": BuiltinSpec(hygiene.machine_id_uninitialized, (PRISTINE,),
                                            "/etc/machine-id is absent, empty or 'uninitialized'"),
    "no-cloud-init-instance": BuiltinSpec(hygiene.no_cloud_init_instance, (PRISTINE,),
                                          "no cloud-init instance state in /var/lib/cloud"),
    "no-core-files": BuiltinSpec(hygiene.no_core_files, (PRISTINE,), "no core dumps anywhere in the image"),
    "var-log-bounded": BuiltinSpec(hygiene.var_log_bounded, (PRISTINE,), "/var/log is under max-mb (default 16)",
                                   ("max-mb",)),
    "no-world-writable": BuiltinSpec(hygiene.no_world_writable, (PRISTINE,),
                                     "nothing world-writable outside the temporary directories"),
    "setuid-allowlist": BuiltinSpec(hygiene.setuid_allowlist, (PRISTINE,),
                                    "no setuid program outside Debian's own and the allow option", ("allow",)),
    "release-stamp": BuiltinSpec(hygiene.release_stamp, (), "the release stamp file exists (and has keys)",
                                 ("path", "keys")),
}
# A name that stands for several built-ins, each with its own result.
GROUPS: dict[str, tuple[str, ...]] = {"hygiene": hygiene.HYGIENE}


@dataclass(frozen=True)
class BuiltinCheck(Check):
    name: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> BuiltinSpec:
        return BUILTINS[self.name]

    @property
    def id(self) -> str:
        return self.name

    @property
    def digest(self) -> str:
        doc = json.dumps({"builtin": self.name, "v": BUILTIN_VERSION, "options": self.options}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()

    @property
    def needs(self) -> tuple[str, ...]:
        return self.spec.needs

    @property
    def limits(self) -> Limits:
        return Limits()

    @property
    def flaky(self) -> bool:
        return False

    @property
    def description(self) -> str:
        return self.spec.description

    def precheck(self) -> Outcome | None:
        return None

    def run(self, testbed: Testbed) -> Outcome:
        return self.spec.run(testbed, self.options)


def builtin_checks(suite: Suite, names: list[str] | None = None) -> list[BuiltinCheck]:
    """The suite's built-ins (those among ``names`` when given), validated with file:line errors."""
    out = []
    suite_file = str(suite.path / SUITE_FILE)
    for use in suite.builtins:
        if use.name in GROUPS:
            if use.options:
                raise SourceError(suite_file, use.line, f"{use.name} takes no options; name its checks one by one "
                                  "to give them options", "builtins")
            clash = sorted({t.name for t in suite.tests} & set(GROUPS[use.name]))
            if clash:
                raise SourceError(suite_file, use.line, f"{use.name} includes {clash[0]!r}, the name of a script "
                                  "test; rename the script or name the built-ins one by one", "builtins")
            out += [BuiltinCheck(n) for n in GROUPS[use.name] if names is None or n in names or use.name in names]
            continue
        if use.name not in BUILTINS:
            raise SourceError(suite_file, use.line, f"unknown built-in check {use.name!r}; known: "
                              f"{', '.join([*BUILTINS, *GROUPS])}", "builtins")
        options = dict(use.options)
        unknown = sorted(set(options) - set(BUILTINS[use.name].options))
        if unknown:
            raise SourceError(suite_file, use.line, f"{use.name} has no option {unknown[0]!r}", "builtins")
        if use.name == "journal-clean" and options.get("priority", "err") not in JOURNAL_PRIORITIES:
            raise SourceError(suite_file, use.line, f"journal-clean priority must be one of "
                              f"{', '.join(JOURNAL_PRIORITIES)}", "builtins")
        if "timeout" in options and not _is_number(options["timeout"]):
            raise SourceError(suite_file, use.line, f"{use.name} timeout must be a number of seconds", "builtins")
        if use.name == "var-log-bounded" and not _is_number(options.get("max-mb", "16")):
            raise SourceError(suite_file, use.line, "var-log-bounded max-mb must be a number", "builtins")
        if names is None or use.name in names:
            out.append(BuiltinCheck(use.name, options))
    return out


def _is_number(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False
