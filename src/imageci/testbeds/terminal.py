"""A person's terminal on a testbed (``Testbed.attached``): a pseudo-terminal of imageci's own between the
person's terminal and the command in the testbed, and the frames that carry one over a socket (a held
testbed's holder, ``engine.holder``).

The command never gets the person's own terminal: it gets the slave side of a fresh pty whose master
imageci relays, so whatever the testbed does to its terminal (``TIOCSTI``, modes, a hang) stays there.

Frames on a socket: one byte of kind, four bytes of length (big-endian), the payload. The client opens with
one JSON line (what it asks for); then ``DATA`` frames carry bytes both ways, ``SIZE`` the client's window
(JSON ``[rows, cols]``), ``EOF`` the end of the client's input, and ``EXIT`` the command's exit status (the
holder's last frame).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import struct
import termios
import threading
import tty
from collections.abc import Callable
from types import FrameType

DATA, SIZE, EOF, EXIT = 0, 1, 2, 3
LOGIN = ["sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash -l; exec sh -l"]  # a person's default command
MAX_FRAME = 1 << 20
Fds = tuple[int, int, int]
RunFn = Callable[[bool, Fds], int]  # (tty, stdin/stdout/stderr) → the command's exit status


def window(fd: int) -> tuple[int, int] | None:
    """The (rows, cols) of the terminal on ``fd`` (None: not a terminal)."""
    try:
        rows, cols, _x, _y = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return rows, cols


def set_window(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", max(1, rows), max(1, cols), 0, 0))


def in_thread(run: RunFn, tty_: bool, fds: Fds) -> tuple[threading.Thread, list[int]]:
    """``run`` started in a thread; its exit status lands in the list."""
    status: list[int] = []

    def go() -> None:
        try:
            status.append(run(tty_, fds))
        except Exception:  # noqa: BLE001 (the command could not start: said as 255, as ssh does)
            status.append(255)

    thread = threading.Thread(target=go, name="imageci-attached", daemon=True)
    thread.start()
    return thread, status


def _drain(master: int, out: Callable[[bytes], None]) -> None:
    while select.select([master], [], [], 0)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            return
        if not chunk:
            return
        out(chunk)


def on_terminal(run: RunFn, stdin: int = 0, stdout: int = 1) -> int:
    """Run a command through ``run`` wired to this process's terminal (through a pty of imageci's own, the
    person's terminal raw meanwhile and restored after), or to its plain stdin and stdout when they are not a
    terminal. The command's exit status."""
    size = window(stdin)
    if size is None or not os.isatty(stdout):
        return run(False, (stdin, stdout, 2))
    master, slave = os.openpty()
    set_window(slave, *size)
    saved = termios.tcgetattr(stdin)

    def resized(_sig: int, _frame: FrameType | None) -> None:
        now = window(stdin)
        if now is not None:
            set_window(master, *now)

    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        tty.setraw(stdin, termios.TCSANOW)  # (what was typed ahead is kept)
        thread, status = in_thread(run, True, (slave, slave, slave))
        _relay_local(master, stdin, stdout, thread)
        _drain(master, lambda b: _write_all(stdout, b))
    finally:
        termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
        os.close(master)
        os.close(slave)
    thread.join()
    return status[0] if status else 255


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _relay_local(master: int, stdin: int, stdout: int, thread: threading.Thread) -> None:
    reading = [master, stdin]
    while thread.is_alive():
        ready = select.select(reading, [], [], 0.1)[0]
        if master in ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if chunk:
                _write_all(stdout, chunk)
        if stdin in ready:
            chunk = os.read(stdin, 65536)
            if chunk:
                _write_all(master, chunk)
            else:
                reading.remove(stdin)


# -- frames over a socket -------------------------------------------------------------------------------------
def send(sock: socket.socket, kind: int, payload: bytes) -> None:
    sock.sendall(struct.pack(">BI", kind, len(payload)) + payload)


def _exactly(sock: socket.socket, n: int) -> bytes | None:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            return None
        got += chunk
    return got


def receive(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next frame (None: the other side closed). A frame too large is the other side's fault: closed."""
    head = _exactly(sock, 5)
    if head is None:
        return None
    kind, size = struct.unpack(">BI", head)
    if size > MAX_FRAME:
        return None
    body = _exactly(sock, size) if size else b""
    return None if body is None else (kind, body)


def client(conn: socket.socket, asked: dict[str, object], stdin: int = 0, stdout: int = 1) -> int:
    """Speak to a holder (``engine.holder``) for this process's terminal (raw meanwhile) or its plain stdin and
    stdout: send ``asked`` (with ``tty`` and ``size`` filled in), relay until the command's exit status comes
    (255: the holder went away without one)."""
    size = window(stdin) if os.isatty(stdout) else None
    conn.sendall(json.dumps({**asked, "tty": size is not None, "size": list(size or (24, 80))}).encode() + b"\n")
    saved = termios.tcgetattr(stdin) if size is not None else None
    previous = None
    if saved is not None:
        def resized(_sig: int, _frame: FrameType | None) -> None:
            now = window(stdin)
            if now is not None:
                with contextlib.suppress(OSError):
                    send(conn, SIZE, json.dumps(list(now)).encode())

        previous = signal.signal(signal.SIGWINCH, resized)
        tty.setraw(stdin, termios.TCSANOW)  # (what was typed ahead is kept)
    try:
        return _client_relay(conn, stdin, stdout)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)


def _client_relay(conn: socket.socket, stdin: int, stdout: int) -> int:
    reading = [stdin, conn.fileno()]
    while True:
        ready = select.select(reading, [], [])[0]
        if stdin in ready:
            chunk = os.read(stdin, 65536)
            if chunk:
                send(conn, DATA, chunk)
            else:
                send(conn, EOF, b"")
                reading.remove(stdin)
        if conn.fileno() in ready:
            frame = receive(conn)
            if frame is None:
                return 255
            if frame[0] == DATA:
                _write_all(stdout, frame[1])
            elif frame[0] == EXIT:
                return int(frame[1] or b"255")
