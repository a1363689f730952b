"""The worker's side of live logs: what a running test prints is collected as it
arrives (``testbeds.output.watching``) and sent to the server about once a
second, from its own thread, so a slow or absent server never slows the test.
Sending is best effort: the attempt's log, written when the test ends, is the
record; the live log stops at ``livelogs.MAX_LIVE`` bytes."""

from __future__ import annotations

import logging
import threading

from imageci.app.livelogs import MAX_CHUNK, MAX_LIVE, LiveArgs, LiveChunk, live_append
from imageci.app.operations import Asks
from imageci.errors import ImageciError

log = logging.getLogger("imageci.worker")
INTERVAL = 1.0  # seconds between sends


LiveSink = Asks  # the server the live log goes to

class LiveStreamer:
    """Collects one job's output and sends it to ``sink``; use as a context manager."""

    def __init__(self, sink: LiveSink, run: int, key: str, test: str, testbed: str, worker: str,
                 interval: float = INTERVAL) -> None:
        self.sink, self.run, self.interval = sink, run, interval
        self.key, self.test, self.testbed, self.worker = key, test, testbed, worker
        self._pending = bytearray()
        self._sent = 0  # bytes the server has
        self._collected = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"imageci-live-{key[:12]}", daemon=True)
        self._gave_up = False

    def feed(self, _stream: str, data: bytes) -> None:
        """``testbeds.output`` shows every chunk here (stdout and stderr, interleaved as they come)."""
        with self._lock:
            room = MAX_LIVE - self._collected
            if room > 0:
                self._pending += data[:room]
                self._collected += min(len(data), room)

    def __enter__(self) -> LiveStreamer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._send(last=True)  # the last bytes, before the attempt is written

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._send()

    def _send(self, last: bool = False) -> None:
        if self._gave_up:
            return
        with self._lock:
            data = bytes(self._pending[:MAX_CHUNK])
        if not last:
            data = data[:whole_utf8(data)]  # a character cut in two waits for its other bytes
        if not data:
            return
        try:
            chunk = LiveChunk(key=self.key, test=self.test, testbed=self.testbed, worker=self.worker,
                              offset=self._sent, data=data.decode(errors="replace"))
            answer = self.sink.call(live_append, LiveArgs.model_construct(run_id=self.run, body=chunk))
        except ImageciError as exc:  # the server is down or refuses: the attempt's log is the record
            log.debug("live log of %s not sent: %s", self.test, exc)
            return
        if not answer.accepted and answer.size == 0:
            self._gave_up = True  # the run ended
            return
        with self._lock:
            del self._pending[:len(data)]
            self._sent = answer.size  # the server's bytes: the next send starts there


def whole_utf8(data: bytes) -> int:
    """How many bytes of ``data`` there are before a UTF-8 sequence its end cuts short."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 != 0x80:  # ASCII or the lead byte of a sequence
            need = 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4 if b >> 3 == 0b11110 else 1
            return len(data) if need <= back else len(data) - back
    return len(data)
