"""The holder of a run's held testbeds (``--hold-on-failure``): a process of its own that keeps the failing
tests' testbeds for a person until their time is up or they are released, and lets ``imageci attach`` in.

It is forked from the run's process once the run is over, so it has the very testbed objects the tests ran
in (a VM's process and key, a container, a sandbox's overlay) and the run's owner token: its lock stays
held while the holder lives, so ``gc`` leaves the testbeds alone, and removes them once the holder is gone
(killed, the machine restarted). It listens on a Unix socket of its own (mode 0600: the user who ran the
test) and speaks the frames of ``testbeds.terminal``: ``attach`` runs a command (a login shell) in a held
testbed on a pty or pipes of its own, ``release`` removes one. When the last is gone, or the time is up,
it removes what is left, finishes the backends and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from imageci import unixsock
from imageci.testbeds import disks
from imageci.testbeds.base import Backend, Testbed
from imageci.testbeds.terminal import DATA, EOF, EXIT, LOGIN, SIZE, in_thread, receive, send, set_window

HEADER_MAX = 65536
EndFn = Callable[[int, str], None]  # (hold id, why it ended) — the holder tells the catalog


@dataclass
class Held:
    hold_id: int
    testbed: Testbed
    backend: str


@dataclass
class Holder:
    held: dict[int, Held]
    backends: dict[str, Backend]
    until: float  # Unix time
    on_end: EndFn
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ending: set[int] = field(default_factory=set)  # holds being removed now

    def end(self, hold_id: int, why: str) -> bool:
        with self._lock:  # held until it is gone: the holder ends only after the last one's end
            gone = self.held.get(hold_id)
            if gone is None or hold_id in self._ending:
                return False
            self._ending.add(hold_id)
            last = len(self.held) == 1
        _logged(gone.testbed.close)
        if last:  # before the catalog says so: what the run pulled is gone once nothing is held
            self.finish()
        _logged(lambda: self.on_end(hold_id, why))
        with self._lock:
            del self.held[hold_id]
        return True

    def serve(self, listener: socket.socket) -> None:
        listener.settimeout(0.5)
        while self.held and time.time() < self.until:
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()
        for hold_id in list(self.held):
            self.end(hold_id, "its time was up")
        self.finish()

    def finish(self) -> None:
        """The backends' end of run, once nothing is held (once only)."""
        with self._lock:
            backends, self.backends = self.backends, {}
        for backend in backends.values():
            _logged(backend.finish)

    def answer(self, conn: socket.socket) -> None:
        """One client on ``conn``: its JSON line (what it asks for), then frames until the command's exit."""
        with conn:
            try:
                asked = json.loads(_header(conn))
                held = self.held.get(int(asked.get("hold", 0)))
                if held is None or held.hold_id in self._ending:
                    send(conn, DATA, b"that testbed is no longer held\r\n")
                    send(conn, EXIT, b"255")
                elif asked.get("op") == "release":
                    self.end(held.hold_id, f"released by {str(asked.get('by', 'its owner'))[:100]}")
                    send(conn, EXIT, b"0")
                else:
                    argv = [str(a) for a in asked.get("argv") or LOGIN]
                    size = asked.get("size") or [24, 80]
                    send(conn, EXIT, str(attach(held.testbed, conn, argv, bool(asked.get("tty")), size)).encode())
            except (OSError, ValueError, TypeError):
                return  # the client went away or spoke nonsense: nothing of the testbed's changes


def _logged(step: Callable[[], object]) -> None:
    """A step of the holder's that must not stop it: what it raised goes to the holder's log."""
    try:
        step()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.stderr.flush()


def _header(conn: socket.socket) -> bytes:
    got = b""
    while not got.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk or len(got) > HEADER_MAX:
            raise ValueError("no header")
        got += chunk
    return got


class _Input:
    """The command's input: the pty's master (end of input: ^D) or a pipe's write end (closed, once)."""

    def __init__(self, fd: int, tty: bool) -> None:
        self.fd, self.tty, self.open = fd, tty, True

    def write(self, data: bytes) -> None:
        if self.open:
            os.write(self.fd, data)

    def end(self) -> None:
        if self.tty:
            with contextlib.suppress(OSError):
                os.write(self.fd, b"\x04")
        elif self.open:
            self.open = False
            os.close(self.fd)


def attach(testbed: Testbed, conn: socket.socket, argv: list[str], tty: bool, size: list[int]) -> int:
    """Run ``argv`` in ``testbed`` for the client on ``conn``: a pty of our own (``tty``) or pipes; its status."""
    if tty:
        master, slave = os.openpty()
        set_window(slave, int(size[0]), int(size[1]))
        thread, status = in_thread(lambda t, fds: testbed.attached(argv, tty=t, fds=fds), True, (slave,) * 3)
        try:
            _relay(conn, master, _Input(master, True), thread)
        finally:
            thread.join()
            os.close(master)
            os.close(slave)
        return status[0] if status else 255
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    given = _Input(in_w, False)
    thread, status = in_thread(lambda t, fds: testbed.attached(argv, tty=t, fds=fds), False, (in_r, out_w, out_w))
    try:
        _relay(conn, out_r, given, thread)
    finally:
        given.end()
        thread.join()
        for fd in (in_r, out_r, out_w):
            os.close(fd)
    return status[0] if status else 255


def _relay(conn: socket.socket, out_fd: int, given: _Input, thread: threading.Thread) -> None:
    """Bytes between the client and the command until the command ends; then what it wrote last."""
    while thread.is_alive():
        ready = select.select([out_fd, conn.fileno()], [], [], 0.1)[0]
        if out_fd in ready:
            _forward(conn, out_fd)
        if conn.fileno() in ready:
            frame = receive(conn)
            if frame is None:  # the client is gone: its input ends (a shell on a terminal exits on ^D)
                given.end()
                break
            if frame[0] == EOF:
                given.end()
            elif frame[0] == DATA:
                given.write(frame[1])
            elif frame[0] == SIZE and given.tty:
                rows, cols = json.loads(frame[1])
                set_window(given.fd, int(rows), int(cols))
    while select.select([out_fd], [], [], 0.05)[0] and _forward(conn, out_fd):
        pass


def _forward(conn: socket.socket, fd: int) -> bool:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        return False
    if chunk:
        with contextlib.suppress(OSError):
            send(conn, DATA, chunk)
    return bool(chunk)


def start(holder: Holder, sock_path: Path, log: Path) -> int:
    """Fork the holder (once the run is over: no test thread runs); its pid. The socket is listening before
    this returns, so the command printed works at once."""
    sock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unixsock.bind(listener, sock_path)
    os.chmod(sock_path, 0o600)
    listener.listen(8)
    pid = os.fork()
    if pid:
        listener.close()
        disks.split_at_fork(in_use=False)
        return pid
    try:  # the holder: a session of its own, no terminal, its words in its log
        disks.split_at_fork(in_use=True)
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        holder.serve(listener)
    finally:
        with contextlib.suppress(OSError):
            sock_path.unlink()
        with contextlib.suppress(Exception):
            disks.close_all()
        os._exit(0)
