"""`imageci log REF TEST --follow`: a test running on a worker, as it prints."""

from __future__ import annotations

import time
from typing import BinaryIO

from imageci.app.livelogs import live_list
from imageci.app.operations import RunArgs
from imageci.app.queries import Results, ResultsArgs, results_op
from imageci.cli.sources import Source
from imageci.errors import UsageError

POLL = 0.5  # seconds between reads


def _results(src: Source, ref: str, tests: list[str] | None) -> Results:
    return src.call(results_op, ResultsArgs(ref=ref, test=tests))


def _running_run(src: Source, ref: str, run: int | None) -> int | None:
    runs = _results(src, ref, None).runs
    if run is not None:
        if not any(r.run == run for r in runs):
            raise UsageError(f"{ref} has no run {run}")
        return run if any(r.run == run and r.status == "running" for r in runs) else None
    running = [r.run for r in runs if r.status == "running"]
    return max(running) if running else None


def _recorded(src: Source, ref: str, test: str, run: int) -> bool:
    """Whether the run recorded an attempt of ``test`` (or ended)."""
    try:
        res = _results(src, ref, [test])
    except UsageError:  # no results for the test yet
        res = _results(src, ref, None)
        return not any(r.run == run and r.status == "running" for r in res.runs)
    return any(a.run == run for a in res.attempts) or not any(r.run == run and r.status == "running"
                                                              for r in res.runs)


def follow_log(src: Source, ref: str, test: str, run: int | None, out: BinaryIO) -> bool:
    """Print ``test``'s live log in ``run`` (default: the newest running run of ``ref``) as it grows,
    until an attempt of it is recorded there. False when no run of ``ref`` is running (the recorded
    log is what there is to print)."""
    found = _running_run(src, ref, run)
    if found is None:
        return False
    key, offset = None, 0
    while True:
        done = _recorded(src, ref, test, found)  # before the last read: nothing printed after it is lost
        listed = src.call(live_list, RunArgs(run_id=found))
        mine = sorted((x for x in listed if x.test == test), key=lambda x: x.updated)
        if mine and mine[-1].key != key:
            if key is not None:
                out.write(f"\n[imageci: {test} started again on {mine[-1].worker or 'another worker'}]\n".encode())
            key, offset = mine[-1].key, 0
        while key is not None and (data := src.live_read(found, key, offset)):
            out.write(data)
            out.flush()
            offset += len(data)
        if done:
            return True
        time.sleep(POLL)
