"""ssh testbed: run tests on a machine that already exists (a lab VM, a
Raspberry Pi, an OpenStack instance) given its host, user and key.

Hosts are declared in ``$IMAGECI_HOME/hosts.yaml`` (or ``$IMAGECI_HOSTS``)::

    hosts:
      pi4:
        host: 192.0.2.20
        port: 22
        user: root
        key: ~/.ssh/id_ed25519
        capabilities: [root, isolation-machine, arch:arm64]

and chosen with ``--testbed ssh:pi4``. The host is not reset between tests
(no ``revert`` capability), so tests that break their testbed are skipped on
it. Timeouts kill the remote process group (``timeout -s KILL``), and files
copied in are removed on close.

A testbed opens one SSH connection (a master, its socket in a private
directory of its own) and runs every command over it: a command costs a new
session, not a new connection (key exchange, authentication, and on the host a
new sshd — under TCG about 0.7 s of guest CPU each). Where the master cannot
be started, each command connects on its own, as before.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from imageci.definitions.limits import DEFAULTS, Limits
from imageci.definitions.yamlsource import load_yaml, validate
from imageci.errors import HostSetupError, TestbedError, UsageError
from imageci.testbeds.base import Backend, Cost, ExecResult, ImageHandle, Testbed
from imageci.testbeds.output import pump, stream_keep

SSH_FAILURE = 255
MASTER_IDLE_S = 300  # a master nobody uses ends by itself (its testbed's process was killed)
# timeout(1) exits 124 after TERM; after its KILL the session dies (137, or 255 from ssh)
TIMED_OUT_CODES = (124, 137, SSH_FAILURE)


class HostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    key: str | None = None
    capabilities: list[str] = Field(default_factory=lambda: ["root"])
    known_hosts: str | None = Field(default=None, description="default: $IMAGECI_HOME/known_hosts, trust on first use")
    connect_timeout: int = Field(default=10, gt=0)


class HostsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hosts: dict[str, HostConfig] = Field(default_factory=dict)


def load_host(path: Path, name: str) -> HostConfig:
    """Host ``name`` from the hosts file at ``path`` (Settings.hosts)."""
    if not path.exists():
        raise UsageError(f"no hosts file at {path}: declare ssh hosts there (see docs/testbeds.md, the ssh testbed)")
    hosts = validate(HostsFile, load_yaml(path)).hosts
    if name not in hosts:
        raise UsageError(f"{path}: no host named {name!r}; hosts: {', '.join(sorted(hosts)) or 'none'}")
    return hosts[name]


class SshTestbed(Testbed):
    def __init__(self, name: str, cfg: HostConfig, known_hosts: Path, limits: Limits = DEFAULTS, *,
                 kex_first: str | None = None) -> None:
        """``kex_first``: the key exchange to offer first (the rest of OpenSSH's list follows)."""
        self.name = name
        self.cfg = cfg
        self.kex_first = kex_first
        self.known_hosts = Path(cfg.known_hosts).expanduser() if cfg.known_hosts else known_hosts
        self.limits = limits.over(DEFAULTS)
        self._created: list[str] = []
        self._open = False
        self._notes: list[str] = []
        self._control: Path | None = None  # the master connection's socket, while there is one

    def capabilities(self) -> frozenset[str]:
        return frozenset(self.cfg.capabilities)

    def limit_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

    def _ssh(self, *, master: bool = False) -> list[str]:
        argv = ["ssh", "-T", "-p", str(self.cfg.port), "-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={self.cfg.connect_timeout}", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile=\"{self.known_hosts}\"", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
        if self.cfg.key:
            argv += ["-i", str(Path(self.cfg.key).expanduser()), "-o", "IdentitiesOnly=yes"]
        if self.kex_first:
            argv += ["-o", f"KexAlgorithms=^{self.kex_first}"]
        if self._control is not None:  # a session on the master (a new connection only when it is gone)
            argv += ["-o", f"ControlPath={self._control / 'master'}",
                     "-o", "ControlMaster=yes" if master else "ControlMaster=no"]
        if master:
            argv += ["-o", f"ControlPersist={MASTER_IDLE_S}", "-f", "-N"]
        return [*argv, f"{self.cfg.user}@{self.cfg.host}", *([] if master else ["--"])]

    def _start_master(self) -> str | None:
        """The connection every command of this testbed shares. None when it is up, or when it cannot be
        made here (each command then connects on its own); the error when the host did not answer."""
        self._control = Path(tempfile.mkdtemp(prefix="imageci-ctl-"))
        weakref.finalize(self, shutil.rmtree, self._control, True)  # a testbed dropped unclosed leaves no directory
        try:
            done = subprocess.run(self._ssh(master=True), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, timeout=self.cfg.connect_timeout + 30)
        except FileNotFoundError as exc:
            self.disconnect()
            raise HostSetupError("the ssh client is not installed: apt-get install openssh-client") from exc
        except subprocess.TimeoutExpired:
            self.disconnect()
            return f"no answer within {self.cfg.connect_timeout + 30}s"
        if done.returncode == 0 and (self._control / "master").exists():
            return None
        self.disconnect()
        return done.stderr.decode("utf-8", "replace").strip() or f"ssh exited {done.returncode}" \
            if done.returncode == SSH_FAILURE else None

    def disconnect(self) -> None:
        """End the master connection (if any) and remove its socket's directory."""
        control, self._control = self._control, None
        if control is None:
            return
        if (control / "master").exists():
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # gone with its host: nothing to end
                subprocess.run(["ssh", "-o", f"ControlPath={control / 'master'}", "-O", "exit",
                                f"{self.cfg.user}@{self.cfg.host}"], stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=30, check=False)
        shutil.rmtree(control, ignore_errors=True)

    def _remote(self, script: str, *, stdin: bytes | None = None, timeout: float | None = 120,
                check: bool = True) -> subprocess.CompletedProcess[bytes]:
        try:
            res = subprocess.run([*self._ssh(), script], input=stdin, capture_output=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise HostSetupError("the ssh client is not installed: apt-get install openssh-client") from exc
        except subprocess.TimeoutExpired as exc:
            raise TestbedError(f"{self.name}: no answer within {timeout}s") from exc
        if check and res.returncode != 0:
            err = res.stderr.decode("utf-8", "replace").strip()
            raise TestbedError(f"{self.name}: {err or f'remote command failed ({res.returncode})'}")
        return res

    def open(self, *, probe: bool = True) -> None:
        """Connect (the master connection); ``probe``: and run a command to see that a session works (a caller
        whose first command checks that itself saves the guest a session)."""
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        unreachable = self._start_master()
        if unreachable is not None:
            raise TestbedError(f"cannot reach {self.name} ({self.cfg.user}@{self.cfg.host}:{self.cfg.port}): "
                               f"{unreachable}")
        if self._control is not None and not probe:
            self._open = True
            return
        res = self._remote("echo imageci-ready", check=False, timeout=self.cfg.connect_timeout + 30)
        if res.returncode != 0 or b"imageci-ready" not in res.stdout:
            self.disconnect()
            err = res.stderr.decode("utf-8", "replace").strip()
            raise TestbedError(f"cannot reach {self.name} ({self.cfg.user}@{self.cfg.host}:{self.cfg.port}): {err}")
        self._open = True

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None) -> ExecResult:
        if not self._open:
            raise TestbedError(f"{self.name} is not open")
        full_env = {"LANG": "C.UTF-8", "IMAGECI_TESTBED": self.name, **(env or {})}
        cmd = ["env", *(f"{k}={v}" for k, v in full_env.items())]
        if timeout:
            # TERM the whole process group at the deadline, KILL it 5 s later
            cmd += ["timeout", "-s", "TERM", "-k", "5", str(int(max(1, timeout)))]
        script = f"cd {shlex.quote(cwd or '/')} && exec {shlex.join([*cmd, *argv])}"
        started = time.monotonic()
        proc = subprocess.Popen([*self._ssh(), script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        # the remote timeout(1) ends the command; the local deadline only catches a hung connection
        res = pump(proc, stdin if stdin is not None else b"", timeout=(timeout + 60) if timeout else None,
                   keep=stream_keep(self.limits), max_output=self.limits.output, stop=proc.kill)
        duration = time.monotonic() - started
        if res.output_exceeded:
            self._notes.append(f"output limit ({self.limits.describe('output')}) reached: the command wrote more "
                               "and was stopped (its ssh session was closed); declare more with `output:`")
            return ExecResult(None, res.stdout, res.stderr, duration)
        if res.timed_out:
            raise TestbedError(f"{self.name}: the connection hung past the test's timeout")
        if timeout and duration >= timeout and proc.returncode in TIMED_OUT_CODES:
            return ExecResult(None, res.stdout, res.stderr, duration, timed_out=True)
        if proc.returncode == SSH_FAILURE:
            raise TestbedError(f"{self.name}: ssh failed: {res.stderr.decode('utf-8', 'replace').strip()[-500:]}")
        return ExecResult(proc.returncode, res.stdout, res.stderr, duration)

    def attached(self, argv: Sequence[str], *, tty: bool, fds: tuple[int, int, int],
                 env: Mapping[str, str] | None = None) -> int:
        if not self._open:
            raise TestbedError(f"{self.name} is not open")
        full_env = {"LANG": "C.UTF-8", "TERM": "xterm-256color" if tty else "dumb", "IMAGECI_TESTBED": self.name,
                    **(env or {})}
        script = f"cd ~ && exec {shlex.join(['env', *(f'{k}={v}' for k, v in full_env.items()), *argv])}"
        ssh = self._ssh()
        if tty:
            ssh[ssh.index("-T")] = "-tt"  # a terminal on the host, though ours is a pty of imageci's own
        return subprocess.run([*ssh, script], stdin=fds[0], stdout=fds[1], stderr=fds[2], start_new_session=True,
                              check=False).returncode

    def copy_in(self, src: Path, dest: str) -> None:
        parent = os.path.dirname(dest.rstrip("/")) or "/"
        # the directories made on the way are this testbed's too (``close`` removes them): the topmost one is printed
        topmost = (f"p={shlex.quote(parent)}; top=; while [ ! -e \"$p\" ]; do top=$p; q=${{p%/*}}; "
                   '[ "$q" = "$p" ] || [ -z "$q" ] && break; p=$q; done; ')
        if src.is_file() and not src.is_symlink():
            # a file: one `install -D` makes the parents and the file with its mode (one program, where mkdir and
            # tar were two: each a fresh VM translates anew under TCG, 0.25 → 0.17 s); where it fails (a host
            # without it), tar says why or does it
            res = self._remote(f"{topmost}install -D -T -m {stat.S_IMODE(src.stat().st_mode):o} /dev/stdin "
                               f'{shlex.quote(dest)} && printf %s "$top"', stdin=src.read_bytes(), check=False)
            if res.returncode == 0:
                return self._made(res.stdout, dest)
            if res.returncode == SSH_FAILURE:
                err = res.stderr.decode("utf-8", "replace").strip()
                raise TestbedError(f"{self.name}: {err or 'the connection failed'}")
        with tempfile.TemporaryFile() as buf:
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(src, arcname=os.path.basename(dest.rstrip("/")))
            buf.seek(0)
            data = buf.read()
        self._made(self._remote(f"{topmost}mkdir -p -- {shlex.quote(parent)} && tar -x -o -C {shlex.quote(parent)} && "
                                'printf %s "$top"', stdin=data).stdout, dest)

    def _made(self, printed: bytes, dest: str) -> None:
        made = printed.decode("utf-8", "replace")
        self._created.append(made if made.startswith("/") and dest.startswith(made.rstrip("/") + "/") else dest)

    def copy_out(self, src: str, dest: Path) -> None:
        res = self._remote(f"tar -c -C {shlex.quote(os.path.dirname(src) or '/')} "
                           f"{shlex.quote(os.path.basename(src))}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            with tarfile.open(fileobj=io.BytesIO(res.stdout), mode="r") as tar:
                tar.extractall(tmp, filter="data")
            os.replace(Path(tmp) / os.path.basename(src), dest)

    def revert(self) -> None:
        raise TestbedError(f"{self.name} is an existing host: it cannot be reverted")

    def close(self) -> None:
        if self._open and self._created:
            paths = " ".join(shlex.quote(p) for p in self._created)
            self._remote(f"rm -rf {paths}", check=False, timeout=60)
        self._created = []
        self._open = False
        self.disconnect()


class SshBackend(Backend):
    cost = Cost(memory_mb=16, cpus=0.1)  # the work happens on the remote host

    def __init__(self, name: str, cfg: HostConfig, known_hosts: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.known_hosts = known_hosts

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        return frozenset(self.cfg.capabilities)

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(),
               limits: Limits = DEFAULTS) -> SshTestbed:
        return SshTestbed(self.name, self.cfg, self.known_hosts, limits)
