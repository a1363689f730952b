"""Live logs: what a worker's running test prints, appended on the server by offset (a
retried append is written once), bounded, readable while the run runs and gone when it
ends; and the worker's streamer, which sends it from its own thread without cutting a
character in two."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel

from imageci.app import importing, livelogs
from imageci.app.access import LOCAL
from imageci.app.livelogs import LiveAppended, LiveChunk
from imageci.app.livestream import LiveStreamer, whole_utf8
from imageci.app.operations import Operation
from imageci.app.session import Session
from imageci.store.states import RunStatus
from imageci.testbeds.output import pump, watching

from conftest import Env, tiny_rootfs

Ans = TypeVar("Ans")

KEY = "job-0001.abcd"


@pytest.fixture
def run(env: Env, tmp_path: Path) -> Iterator[tuple[Session, int]]:
    session = Session.open(env.settings)
    version = importing.import_(session, "live", str(tiny_rootfs(tmp_path / "rootfs.tar"))).version
    yield session, session.catalog.start_run(version.digest, version.id, {})
    session.close()


def _chunk(offset: int, data: str, key: str = KEY) -> LiveChunk:
    return LiveChunk(key=key, test="ticks", testbed="sandbox", worker="w1", offset=offset, data=data)


def test_appends_by_offset_once_bounded_and_gone_when_the_run_ends(run: tuple[Session, int],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    session, run_id = run
    first = livelogs.append(session, run_id, _chunk(0, "héllo "))
    assert first == LiveAppended(size=7, accepted=True)
    assert livelogs.append(session, run_id, _chunk(0, "héllo ")) == first  # a retry: written once
    assert livelogs.append(session, run_id, _chunk(0, "héllo world\n")).size == 13  # only the new part
    assert livelogs.append(session, run_id, _chunk(99, "lost?")) == LiveAppended(size=13, accepted=False)
    assert livelogs.read(session, run_id, KEY) == "héllo world\n".encode()
    assert livelogs.read(session, run_id, KEY, 7) == b"world\n"
    assert livelogs.read(session, run_id, KEY, 13) == b""
    [listed] = livelogs.logs(session, run_id)
    assert (listed.test, listed.testbed, listed.worker, listed.size) == ("ticks", "sandbox", "w1", 13)

    monkeypatch.setattr(livelogs, "MAX_LIVE", 16)  # the bound: the rest is the attempt's log
    assert livelogs.append(session, run_id, _chunk(13, "0123456789")).size > 16
    full = livelogs.read(session, run_id, KEY)
    assert full.startswith(b"h\xc3\xa9llo world\n012") and b"the live log stops here (16 bytes)" in full
    before = len(full)
    assert livelogs.append(session, run_id, _chunk(before, "more")).size == before  # nothing past the bound

    with pytest.raises(Exception, match="key"):
        livelogs.append(session, run_id, _chunk(0, "x", key="../../etc"))
    session.catalog.finish_run(run_id, 0, RunStatus.FINISHED)
    assert livelogs.append(session, run_id, _chunk(0, "late")) == LiveAppended(size=0, accepted=False)
    assert livelogs.sweep(session) == 0  # a follower still reads the end for a while …
    assert [x.key for x in livelogs.logs(session, run_id)] == [KEY]
    assert livelogs.read(session, run_id, KEY) == full
    assert livelogs.sweep(session, grace=0) == 1  # … then it is gone
    assert not (session.settings.home / "live" / f"run-{run_id}").exists()


class _Server:
    """The server's side, in process: each send is the ``live_append`` operation on the real home."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.sends = 0

    def call(self, op: Operation[Any, Ans], req: BaseModel) -> Ans:
        assert op is livelogs.live_append
        self.sends += 1
        return op.run(self.session, req, LOCAL)


def test_the_streamer_sends_what_commands_print_as_it_comes(run: tuple[Session, int]) -> None:
    """A real command, read by the same ``pump`` every backend uses, prints in pieces that cut
    characters in two; the streamer sends while it runs, and the server ends with the same bytes."""
    session, run_id = run
    server = _Server(session)
    text = "naïve café ✓\n".encode()
    writer = ("import sys, time\nd = sys.argv[1].encode()\nfor i in range(0, len(d), 3):\n"
              "    sys.stdout.buffer.write(d[i:i + 3]); sys.stdout.flush(); time.sleep(0.3)\n")
    seen_while_running: list[bytes] = []
    with LiveStreamer(server, run_id, KEY, "ticks", "sandbox", "w1", interval=0.05) as live, watching(live.feed):
        proc = subprocess.Popen([sys.executable, "-c", writer, text.decode()], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        def look() -> None:
            for _ in range(20):
                time.sleep(0.1)
                seen_while_running.append(livelogs.read(session, run_id, KEY))

        watcher = threading.Thread(target=look)
        watcher.start()
        res = pump(proc, None, timeout=30, keep=1 << 20, max_output=None, stop=proc.kill)
        watcher.join()
    assert res.stdout == text
    assert livelogs.read(session, run_id, KEY) == text
    partial = [s for s in seen_while_running if s and s != text]
    assert partial, seen_while_running  # some of it was there before the command ended
    assert all(text.startswith(s) and s.decode() for s in partial)  # whole characters only
    assert server.sends > 1


@pytest.mark.parametrize(("data", "whole"), [(b"abc", 3), ("é".encode()[:1], 0), (b"a" + "✓".encode()[:2], 1),
                                             ("✓".encode(), 3), (b"\xff\xfe", 2), (b"", 0)])
def test_whole_utf8(data: bytes, whole: int) -> None:
    assert whole_utf8(data) == whole
