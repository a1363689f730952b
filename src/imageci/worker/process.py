"""One worker process: register the one task and consume the queues of this
host's routes until SIGTERM (warm: running jobs finish) or SIGQUIT/SIGINT
twice (cold: they are re-queued by the broker). What it runs and where its
answers go is ``app.jobs``; what it offers and its clean-up, ``app.workers``."""

from __future__ import annotations

import socket
import sys
import warnings
from typing import TYPE_CHECKING, Any

from imageci.app.jobs import TASK, WorkerContext, open_context, run_payload
from imageci.app.session import Session
from imageci.app.workers import broker
from imageci.config import Settings

if TYPE_CHECKING:
    from celery import Celery

    from imageci.client.remote import Remote


def register(app: Celery, ctx: WorkerContext) -> None:
    """The task every job is: run it with ``ctx`` and answer what the server recorded."""

    @app.task(name=TASK)  # type: ignore[untyped-decorator]
    def job(payload: dict[str, Any]) -> dict[str, Any]:
        return run_payload(ctx, payload)


def run_worker(settings: Settings, remote: Remote, queues: list[str], concurrency: int,
               loglevel: str = "INFO") -> int:
    """Consume jobs from ``queues`` until shut down; the worker's exit code."""
    from celery.signals import worker_ready

    from imageci.client.remote import ApiClient

    session = Session.open(settings)
    name = f"imageci-{session.owner.token}@{socket.gethostname()}"
    ctx = open_context(session, ApiClient(remote), name)
    app = broker(settings)
    register(app, ctx)
    # Root is what the sandbox needs, and jobs are JSON (never pickle): Celery's warning says nothing here.
    warnings.filterwarnings("ignore", message=".*superuser privileges.*")

    def ready(**_kw: Any) -> None:
        print(f"worker {name} ready: consuming {len(queues)} queue(s)", file=sys.stderr, flush=True)

    worker_ready.connect(ready, weak=False)
    worker = app.Worker(hostname=name, queues=queues, concurrency=concurrency, pool_cls="threads",
                        loglevel=loglevel, without_gossip=True, without_mingle=True, optimization="fair",
                        quiet=True)
    try:
        worker.start()
    finally:
        ctx.finish()
        session.close()
    return int(getattr(worker, "exitcode", 0) or 0)
