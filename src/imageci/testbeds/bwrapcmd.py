"""The bubblewrap command line of one sandbox command (``testbeds.sandbox``), and what its status says."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import termios
from collections.abc import Mapping, Sequence
from pathlib import Path

from imageci.testbeds.hardening import hardening_args

HOSTNAME = "imageci-sandbox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def bwrap_argv(bwrap: str, root: Path, argv: Sequence[str], env: Mapping[str, str], cwd: str, status_fd: int,
               seccomp_fd: int | None, *, names: Sequence[str], privileged: bool, network: bool,
               own_netns: bool) -> list[str]:
    """bwrap over the testbed's merged ``root``: new namespaces, hardened unless ``privileged``, loopback only
    unless ``network`` (or its ``own_netns``, entered around it), a clean environment plus ``env``."""
    cmd = [bwrap, "--bind", str(root), "/", "--proc", "/proc", "--dev", "/dev",
           "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
           "--hostname", HOSTNAME, "--die-with-parent", "--new-session",
           "--json-status-fd", str(status_fd), "--chdir", cwd, "--clearenv", *names]
    if not privileged:
        cmd += hardening_args()
    if seccomp_fd is not None:
        cmd += ["--seccomp", str(seccomp_fd)]
    if not network and not own_netns:
        cmd.append("--unshare-net")
    elif network and os.path.exists("/etc/resolv.conf"):
        # images ship no resolver config (hygiene): a test that needs the network borrows the host's
        cmd += ["--ro-bind", os.path.realpath("/etc/resolv.conf"), "/etc/resolv.conf"]
    full_env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb", **env}
    for k, v in full_env.items():
        cmd += ["--setenv", k, v]
    return [*cmd, "--", *argv]


def take_terminal() -> None:
    """In the child, before bwrap: its stdin (a pty of imageci's own) becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def exit_code(status: str, fallback: int) -> int:
    """The command's exit status from bwrap's ``--json-status-fd`` lines (bwrap's own, when none says)."""
    code = fallback
    for line in status.splitlines():
        with contextlib.suppress(json.JSONDecodeError, ValueError, TypeError):
            doc = json.loads(line)
            if isinstance(doc, dict) and "exit-code" in doc:
                code = int(doc["exit-code"])
    return code
