"""How an ``imageci`` process starts (the console script and ``python -m imageci.cli``): the garbage collector
waits for the command's first second.

A command's start is almost all imports (Typer, pydantic, the ORM), whose objects live as long as the
process: the collector, run as they pile up, scanned them again and again — about 45 ms of a one-test
`imageci run`, 10 ms of a query command — and freed nothing. It is off for the command's first second; a
command still running then (a long run, ``serve``, a worker) gets one collection, everything alive frozen
out of later ones, and the collector back on. A process forked meanwhile starts with it on. When the command
ends, the collector is frozen too: the interpreter's collections at exit walked every object it made (a tenth of
a query command's time); what stays is freed as the modules go, only cycles are left to the process's end."""

from __future__ import annotations

import gc
import os
import threading

COLLECT_AFTER_S = 1.0
_forks_collect = False


def collect_after_start(after: float = COLLECT_AFTER_S) -> None:
    """Leave the collector off for ``after`` seconds (unless something else turned it off already)."""
    global _forks_collect
    if not gc.isenabled():
        return
    if not _forks_collect:
        os.register_at_fork(after_in_child=gc.enable)
        _forks_collect = True
    gc.disable()

    def resume() -> None:
        gc.collect()
        gc.freeze()
        gc.enable()

    timer = threading.Timer(after, resume)
    timer.daemon = True  # a command that ends sooner does not wait for it
    timer.start()


def main() -> None:
    collect_after_start()
    from imageci.cli.main import entry

    try:
        entry()
    finally:
        gc.freeze()
