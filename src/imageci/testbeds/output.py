"""A command's output, read with constant memory whatever the command writes.

Each stream keeps its first and last bytes (``keep`` in all, half each) and
counts the rest; what was cut is replaced by a marker that says how much. A
command that writes more than ``max_output`` bytes in all is stopped (the
output limit), like one that runs past its timeout. Every backend reads its
commands' output through :func:`pump`, which also shows each chunk, as it
arrives, to the ``watching`` callback of the calling context (a worker streams
a running test's log to the server with it).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass

from imageci.definitions.limits import DEFAULTS, Limits

CHUNK = 1 << 16

Watcher = Callable[[str, bytes], None]  # (stream: "stdout" | "stderr", bytes as they arrive)
_watcher: ContextVar[Watcher | None] = ContextVar("imageci_output_watcher", default=None)


@contextmanager
def watching(watcher: Watcher) -> Iterator[None]:
    """Show every command's output that this context pumps to ``watcher`` as it arrives (it must
    be quick and must not raise: what it raises is ignored)."""
    token = _watcher.set(watcher)
    try:
        yield
    finally:
        _watcher.reset(token)


@contextmanager
def unwatched() -> Iterator[None]:
    """Commands of imageci's own (not the test's) in this context: their output is shown to no watcher."""
    token = _watcher.set(None)
    try:
        yield
    finally:
        _watcher.reset(token)


class Capture:
    """The head and the tail of a stream, and how long it was."""

    def __init__(self, keep: int) -> None:
        self.head_max = max(1, keep // 2)
        self.tail_max = max(1, keep - self.head_max)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_max - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > 2 * self.tail_max:  # trim in batches: amortised O(1) per byte
                del self.tail[: len(self.tail) - self.tail_max]

    @property
    def cut(self) -> int:
        return max(0, self.total - len(self.head) - min(len(self.tail), self.tail_max))

    def value(self) -> bytes:
        if not self.cut:
            return bytes(self.head + self.tail)
        tail = bytes(self.tail[-self.tail_max:])
        marker = (f"\n[imageci: {self.cut} bytes cut here; {self.total} bytes were written in all; the first "
                  f"{len(self.head)} and the last {len(tail)} are kept]\n").encode()
        return bytes(self.head) + marker + tail


def stream_keep(limits: Limits) -> int:
    """Bytes kept of each of stdout and stderr: half the attempt's log limit each."""
    return max(2, (limits.log or DEFAULTS.log or 2) // 2)


def bounded(data: bytes, keep: int) -> bytes:
    """``data`` cut to ``keep`` bytes the same way (head, marker, tail)."""
    if len(data) <= keep:
        return data
    c = Capture(keep)
    c.feed(data)
    return c.value()


@dataclass(frozen=True)
class Pumped:
    stdout: bytes
    stderr: bytes
    timed_out: bool
    output_exceeded: bool  # wrote more than max_output: stopped
    written: int  # bytes written to stdout + stderr in all


class _Pump:
    """One command's pipes, pumped: stdin fed, stdout and stderr captured (and shown to the watcher)."""

    def __init__(self, proc: subprocess.Popen[bytes], stdin: bytes | None, keep: int) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.out, self.err = Capture(keep), Capture(keep)
        self.streams = {proc.stdout.fileno(): self.out, proc.stderr.fileno(): self.err}
        self.names = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        self.watcher = _watcher.get()
        self.sel = selectors.DefaultSelector()
        for fd in self.streams:
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ)
        self.pending = memoryview(stdin or b"")
        self.in_fd = -1
        if proc.stdin is not None:
            if stdin:
                self.in_fd = proc.stdin.fileno()
                os.set_blocking(self.in_fd, False)
                self.sel.register(self.in_fd, selectors.EVENT_WRITE)
            else:
                proc.stdin.close()

    def write(self) -> None:
        try:
            n = os.write(self.in_fd, self.pending[:CHUNK])
        except BlockingIOError:
            return
        except BrokenPipeError:
            n = len(self.pending)
        self.pending = self.pending[n:]
        if not self.pending and self.proc.stdin is not None:
            self.sel.unregister(self.in_fd)
            self.proc.stdin.close()

    def read(self, fd: int) -> int:
        """Read what ``fd`` has; the bytes written in all so far."""
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            data = None
        if data == b"":
            self.sel.unregister(fd)
        elif data:
            self.streams[fd].feed(data)
            if self.watcher is not None:
                with suppress(Exception):  # a watcher never changes what the test does
                    self.watcher(self.names[fd], data)
        return self.out.total + self.err.total

    def close(self) -> None:
        self.sel.close()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                f.close()


def pump(proc: subprocess.Popen[bytes], stdin: bytes | None, *, timeout: float | None, keep: int,
         max_output: int | None, stop: Callable[[], None], drain: float = 10.0) -> Pumped:
    """Feed ``stdin``, read stdout and stderr until both close, and wait for ``proc``.
    On timeout or too much output, ``stop()`` kills the command (its whole tree);
    what it wrote until then is kept."""
    p = _Pump(proc, stdin, keep)
    deadline = time.monotonic() + timeout if timeout else None
    stopped_at: float | None = None
    timed_out = exceeded = False
    try:
        while p.sel.get_map():
            now = time.monotonic()
            if stopped_at is None and deadline is not None and now >= deadline:
                timed_out = True
            if stopped_at is None and (timed_out or exceeded):
                stop()
                stopped_at = now
            if stopped_at is not None and now - stopped_at > drain:
                break  # something outside the command's tree holds the pipes: give up on them
            wait = 0.5 if deadline is None or stopped_at is not None else max(0.0, min(0.5, deadline - now))
            for key, _ in p.sel.select(wait):
                if int(key.fd) == p.in_fd:
                    p.write()
                elif p.read(int(key.fd)) > (max_output if max_output is not None else float("inf")):
                    exceeded = True
    finally:
        p.close()
    if stopped_at is None:  # the streams closed; the command may still run (until its deadline)
        try:
            proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop()
    try:
        proc.wait(timeout=drain)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return Pumped(p.out.value(), p.err.value(), timed_out, exceeded, p.out.total + p.err.total)
