"""One worker process: clean up what a killed worker of this home left, find
what this host offers, register the one task, and consume the queues of its
routes until SIGTERM (warm: running jobs finish) or SIGQUIT/SIGINT twice
(cold: they are re-queued by the broker)."""

from __future__ import annotations

import logging
import socket
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from imageci.app.jobs import WorkerContext, run_job
from imageci.app.session import Session
from imageci.app.workers import worker_offer
from imageci.config import Settings
from imageci.engine.broker import celery_app
from imageci.engine.budget import Budget, default_budget
from imageci.engine.gc import collect_garbage
from imageci.engine.jobs import TASK, Job
from imageci.engine.routing import Offer
from imageci.homelock import HomeLock

if TYPE_CHECKING:
    from celery import Celery

    from imageci.client.remote import Remote

log = logging.getLogger("imageci.worker")


def register(app: Celery, ctx: WorkerContext) -> None:
    """The task every job is: run it with ``ctx`` and answer what the server recorded."""

    @app.task(name=TASK)  # type: ignore[untyped-decorator]
    def job(payload: dict[str, Any]) -> dict[str, Any]:
        return run_job(ctx, Job.model_validate(payload)).model_dump()


def prepare(settings: Settings, capabilities: Sequence[str]) -> tuple[list[str], Offer]:
    """gc of dead owners' leftovers in this home (a worker killed mid-test), then this host's offer."""
    done, _kept = collect_garbage(settings, HomeLock(settings.home), force=True)
    return done, worker_offer(settings, capabilities)


def run_worker(settings: Settings, remote: Remote, offer: Offer, concurrency: int, loglevel: str = "INFO") -> int:
    """Consume jobs until shut down; the worker's exit code."""
    from imageci.client.remote import ApiClient

    session = Session.open(settings)
    name = f"imageci-{session.owner.token}@{socket.gethostname()}"
    ctx = WorkerContext(session, ApiClient(remote), name, patience=settings.visibility_timeout / 2,
                        budget=Budget(default_budget(settings.memory_budget_mb, settings.cpu_budget)))
    app = celery_app(settings.broker_url, settings.visibility_timeout)
    register(app, ctx)
    # Root is what the sandbox needs, and jobs are JSON (never pickle): Celery's warning says nothing here.
    warnings.filterwarnings("ignore", message=".*superuser privileges.*")
    from celery.signals import worker_ready

    def ready(**_kw: Any) -> None:
        print(f"worker {name} ready: consuming {len(offer.queues())} queue(s)", file=sys.stderr, flush=True)

    worker_ready.connect(ready, weak=False)
    worker = app.Worker(hostname=name, queues=offer.queues(), concurrency=concurrency, pool_cls="threads",
                        loglevel=loglevel, without_gossip=True, without_mingle=True, optimization="fair",
                        quiet=True)
    try:
        worker.start()
    finally:
        ctx.finish()
        session.close()
    return int(getattr(worker, "exitcode", 0) or 0)
