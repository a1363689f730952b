"""The bubblewrap command line of one sandbox command (``testbeds.sandbox``), and what its status says."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from imageci.testbeds.base import ExecResult
from imageci.testbeds.hardening import hardening_args

HOSTNAME = "imageci-sandbox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSY_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8)  # seconds before each new start of a command refused as busy


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



def busy_retried(start: Callable[[], ExecResult], command: str) -> ExecResult:
    """``start()`` (a command run in a sandbox), started again while bwrap could not start ``command`` because
    execve refused its file as open for writing somewhere: a file just copied in, whose descriptor a process
    forked meanwhile (for another test) holds until it execs (ETXTBSY). Nothing ran then."""
    busy = f"bwrap: execvp {command}: {os.strerror(errno.ETXTBSY)}\n".encode()
    res = start()
    for pause in BUSY_PAUSES:
        if res.exit_code != 1 or res.stdout or res.stderr != busy:
            break
        time.sleep(pause)
        res = start()
    return res
