"""Image hygiene built-ins: what must not ship in an image that many machines
will boot from (host keys, a machine id, cloud-init state, core dumps, logs,
world-writable files, unexpected setuid programs) and the release stamp that
must.

They look at the image's files as built, so they need the ``pristine``
capability: a testbed on which no init has run yet (the sandbox, a plain
podman container). On a booted VM they are skipped with that reason, since
booting creates a machine id and host keys by design.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from imageci.checks.base import Outcome, format_log
from imageci.verdicts import Verdict

if TYPE_CHECKING:
    from imageci.testbeds.base import Testbed

# Where anyone may write by design; a world-writable file there is not a finding.
TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/var/crash")
# Debian's own setuid programs (bookworm: login, mount, util-linux, passwd,
# sudo, openssh, dbus, policykit, fuse, iputils, ntfs-3g, xorg).
DEFAULT_SETUID = (
    "/usr/bin/chfn", "/usr/bin/chsh", "/usr/bin/gpasswd", "/usr/bin/newgrp", "/usr/bin/passwd", "/usr/bin/su",
    "/usr/bin/mount", "/usr/bin/umount", "/usr/bin/sudo", "/usr/bin/pkexec", "/usr/bin/fusermount",
    "/usr/bin/fusermount3", "/usr/bin/ntfs-3g", "/usr/bin/ping", "/usr/lib/openssh/ssh-keysign",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper", "/usr/lib/policykit-1/polkit-agent-helper-1",
    "/usr/lib/polkit-1/polkit-agent-helper-1", "/usr/lib/xorg/Xorg.wrap", "/usr/sbin/pppd",
)
HYGIENE = ("no-ssh-host-keys", "machine-id-uninitialized", "no-cloud-init-instance", "no-core-files",
           "var-log-bounded", "no-world-writable", "setuid-allowlist")


def _lines(testbed: Testbed, script: str, timeout: float = 300) -> tuple[int | None, list[str], bytes]:
    r = testbed.exec(["sh", "-c", script], timeout=timeout)
    found = [ln for ln in r.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
    return r.exit_code, found, format_log(f"# {script}", r.stdout, r.stderr)


def _none_found(testbed: Testbed, script: str, what: str) -> Outcome:
    code, found, log = _lines(testbed, script)
    if code not in (0, None) and not found:
        return Outcome(Verdict.ERROR, f"the check itself failed (exit {code})", code, log)
    if code is None:
        return Outcome(Verdict.ERROR, "the check timed out", code, log)
    if found:
        more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
        return Outcome(Verdict.FAIL, f"{what}: {found[0]}{more}", code, log)
    return Outcome(Verdict.PASS, "", code, log)


def _prune(paths: tuple[str, ...]) -> str:
    return " -o ".join(f"-path {shlex.quote(p)}" for p in paths)


def no_ssh_host_keys(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    return _none_found(testbed, "ls -1d /etc/ssh/ssh_host_*key* 2>/dev/null; true",
                       "SSH host keys ship in the image (every machine would share them)")


def machine_id_uninitialized(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    script = ("for f in /etc/machine-id /var/lib/dbus/machine-id; do "
              "[ -L \"$f\" ] && continue; [ -s \"$f\" ] || continue; "
              "c=$(cat \"$f\"); [ \"$c\" = uninitialized ] || echo \"$f: $c\"; done")
    return _none_found(testbed, script, "a machine id is set (clones would share it)")


def no_cloud_init_instance(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    script = ("[ -e /var/lib/cloud/instance ] && echo /var/lib/cloud/instance; "
              "ls -1d /var/lib/cloud/instances/* /var/lib/cloud/data/instance-id 2>/dev/null; true")
    return _none_found(testbed, script, "cloud-init instance state ships (it would not run on first boot)")


def no_core_files(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    script = (f"find / -xdev \\( {_prune(('/proc', '/sys', '/dev'))} \\) -prune -o -type f "
              "\\( -name core -o -name 'core.[0-9]*' -o -name '*.core' \\) -size +0 -print 2>/dev/null; true")
    return _none_found(testbed, script, "core dumps in the image")


def var_log_bounded(testbed: Testbed, opts: dict[str, str]) -> Outcome:
    limit_kb = int(float(opts.get("max-mb", "16")) * 1024)
    code, found, log = _lines(testbed, "du -sk /var/log 2>/dev/null | cut -f1")
    if code != 0 or not found or not found[0].isdigit():
        return Outcome(Verdict.ERROR, f"could not measure /var/log (exit {code})", code, log)
    used = int(found[0])
    if used > limit_kb:
        return Outcome(Verdict.FAIL, f"/var/log holds {used} KiB, more than {limit_kb} KiB", code, log)
    return Outcome(Verdict.PASS, f"/var/log holds {used} KiB", code, log)


def no_world_writable(testbed: Testbed, _opts: dict[str, str]) -> Outcome:
    # files writable by anyone, and directories writable by anyone without the sticky bit
    script = (f"find / -xdev \\( {_prune(('/proc', '/sys', '/dev', *TMP_DIRS))} \\) -prune -o "
              "\\( -type f -perm -0002 -print \\) -o \\( -type d -perm -0002 ! -perm -1000 -print \\) "
              "2>/dev/null; true")
    return _none_found(testbed, script, "world-writable outside the temporary directories")


def setuid_allowlist(testbed: Testbed, opts: dict[str, str]) -> Outcome:
    allowed = set(DEFAULT_SETUID) | {p.strip() for p in opts.get("allow", "").split(",") if p.strip()}
    code, found, log = _lines(testbed, f"find / -xdev \\( {_prune(('/proc', '/sys', '/dev'))} \\) -prune -o "
                              "-type f -perm -4000 -print 2>/dev/null; true")
    if code is None:
        return Outcome(Verdict.ERROR, "the check timed out", code, log)
    # /bin may be a symlink to /usr/bin (merged /usr): compare the /usr spelling
    extra = sorted(p for p in found if p not in allowed and f"/usr{p}" not in allowed)
    if extra:
        more = f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""
        return Outcome(Verdict.FAIL, f"setuid program outside the allow-list: {extra[0]}{more}", code, log)
    return Outcome(Verdict.PASS, "", code, log)


def release_stamp(testbed: Testbed, opts: dict[str, str]) -> Outcome:
    path = opts.get("path", "/etc/imageci-release")
    keys = [k.strip() for k in opts.get("keys", "").split(",") if k.strip()]
    r = testbed.exec(["cat", "--", path], timeout=60)
    log = format_log(f"# cat {path}", r.stdout, r.stderr)
    if r.exit_code != 0:
        return Outcome(Verdict.FAIL, f"no release stamp at {path}", r.exit_code, log)
    text = r.stdout.decode("utf-8", "replace")
    if not text.strip():
        return Outcome(Verdict.FAIL, f"release stamp {path} is empty", r.exit_code, log)
    have = {ln.split("=", 1)[0].strip() for ln in text.splitlines() if "=" in ln and ln.split("=", 1)[1].strip()}
    missing = [k for k in keys if k not in have]
    if missing:
        return Outcome(Verdict.FAIL, f"release stamp {path} lacks {', '.join(missing)}", r.exit_code, log)
    return Outcome(Verdict.PASS, "", r.exit_code, log)
