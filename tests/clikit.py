"""The suite's `imageci` processes, forked from one that imported imageci once (a fork server, one per pytest
worker). Each `Env.cli` call is still a process of its own, as a user's: its argv, environment, working
directory, stdio pipes, exit status and signals are its own, and it ends as `python -m imageci.cli` ends
(atexit, flushed streams). What it skips is the interpreter's start and the imports: about 0.3 CPU-s of each
of the suite's ~1,300 commands. The process's start itself is tested where it matters by processes of their
own (`tests/test_cli.py`'s probe of what a command loads, the benchmarks, the workers' and servers' processes).

``IMAGECI_TEST_FORK=0`` runs each command as ``python -m imageci.cli`` instead.

Run as a script, this file is the server: ``python tests/clikit.py SOCKET``."""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import locale
import os
import pkgutil
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
IMAGECI = [sys.executable, "-m", "imageci.cli"]
HEADER = 8  # the request's length, big-endian, sent with the three descriptors


class ForkServer:
    """A running fork server and the way to ask it for one command."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="imageci-cli-"))  # short: a socket's path has ~100 bytes
        self.path = self.dir / "s"
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.path)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, cwd=REPO)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready != b"ready\n":
            raise RuntimeError(f"the imageci fork server did not start ({ready!r}, exit {self.proc.poll()})")
        atexit.register(self.stop)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, argv: Sequence[str], env: dict[str, str], cwd: Path,
            timeout: float | None) -> subprocess.CompletedProcess[str]:
        """``imageci ARGV`` as ``subprocess.run(..., capture_output=True, text=True, timeout=...)`` runs it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pipes = [os.pipe(), os.pipe()]
        null = os.open(os.devnull, os.O_RDONLY)
        request = json.dumps({"argv": list(argv), "env": env, "cwd": str(cwd)}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(self.path))
            socket.send_fds(conn, [len(request).to_bytes(HEADER, "big")], [null, pipes[0][1], pipes[1][1]])
            for fd in (null, pipes[0][1], pipes[1][1]):
                os.close(fd)
            conn.sendall(request)
            answers = conn.makefile("rb")
            pid = int(answers.readline())
            readers = [_Reader(r) for r, _ in pipes]
            try:
                conn.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
                status = int(answers.readline())
                for reader in readers:
                    reader.join(deadline)
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                out, err = (reader.join(None) for reader in readers)
                raise subprocess.TimeoutExpired([*IMAGECI, *argv], timeout or 0, output=out, stderr=err) from None
        out, err = (reader.join(None) for reader in readers)
        return subprocess.CompletedProcess([*IMAGECI, *argv], os.waitstatus_to_exitcode(status), out, err)


class _Reader:
    """One output pipe read to its end in a thread, decoded as ``subprocess`` decodes text."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                self.chunks.append(chunk)

    def join(self, deadline: float | None) -> str:
        self.thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if deadline is not None and self.thread.is_alive():
            raise TimeoutError
        text = b"".join(self.chunks).decode(locale.getpreferredencoding(False))
        return text.replace("\r\n", "\n").replace("\r", "\n")


_server: ForkServer | None = None
_lock = threading.Lock()


def run_cli(argv: Sequence[str], env: dict[str, str], *, check: bool = False,
            timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
    """``imageci ARGV`` in ``env``, from the repository, its output captured as text."""
    global _server
    if os.environ.get("IMAGECI_TEST_FORK") == "0":
        done = subprocess.run([*IMAGECI, *argv], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=REPO)
    else:
        with _lock:
            if _server is None:
                _server = ForkServer()
        done = _server.run(argv, env, REPO, timeout)
    if check:
        done.check_returncode()
    return done


def _preload() -> None:
    """Every imageci module, once, and the catalog's mappers configured (what a command would do when it runs
    is then done)."""
    import imageci

    for module in pkgutil.walk_packages(imageci.__path__, "imageci."):
        if module.name != "imageci.cli.__main__":
            importlib.import_module(module.name)
    from sqlalchemy.orm import configure_mappers

    configure_mappers()  # what a command's first query would do


def _serve(path: str) -> dict[str, Any]:
    """Accept requests until the pytest worker is gone; returns only in a forked command's process."""
    sys.path[0] = str(REPO)  # as `python -m` from the repository has it
    _preload()
    gc.freeze()  # the loaded modules stay out of every fork's collections (they would be copied)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(1.0)
    parent = os.getppid()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        _reap()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:
                sys.exit(0)
            continue
        if os.fork() == 0:
            listener.close()
            return _supervise(conn)
        conn.close()


def _reap() -> None:
    """Wait for the supervisors that ended, so that their commands' CPU time is counted as this server's
    children's (and, once the worker waits for the server, as the worker's, as a command it ran would be)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def _supervise(conn: socket.socket) -> dict[str, Any]:
    """In a fork of the server: fork the command, tell its pid, then its wait status."""
    conn.setblocking(True)
    header, fds, _, _ = socket.recv_fds(conn, HEADER, 3)
    size, data = int.from_bytes(header, "big"), b""
    while len(data) < size:
        data += conn.recv(size - len(data))
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        return dict(json.loads(data))
    for fd in fds:
        os.close(fd)
    conn.sendall(f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    conn.sendall(f"{status}\n".encode())
    os._exit(0)


def _main() -> None:
    request = _serve(sys.argv[1])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import imageci.cli

    sys.argv = [str(Path(imageci.cli.__file__).parent / "__main__.py"), *request["argv"]]
    from imageci.cli.main import entry

    try:
        entry()
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    _end(code)


def _exit_status(code: object) -> int:
    """What the interpreter makes of ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _end(code: int) -> None:
    """End as the interpreter ends a process (its threads joined, atexit, streams flushed), but without
    tearing down the thousand modules the server loaded: that would touch, and so copy, all their memory."""
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    _main()
