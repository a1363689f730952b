"""The Celery application both sides share: the coordinator that sends jobs
(``engine.fanout``) and the workers that run them (``imageci.worker``).

Redis is the broker and the result backend. What makes a job survive a
worker's death: it is acknowledged only after its attempt is recorded
(``task_acks_late``), a worker reserves one job per free slot
(``worker_prefetch_multiplier=1``), a job whose worker process died is
re-queued (``task_reject_on_worker_lost``), and one a dead *host* held is
delivered again once ``visibility_timeout`` passed since its delivery. That
timeout must exceed the longest test, or a job still running is delivered a
second time (harmless — the attempt's idempotency key records it once — but
wasted work). Redis must persist (``appendonly yes``) for queued jobs to
survive a broker restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imageci.errors import UsageError

if TYPE_CHECKING:
    from celery import Celery

RESULT_TTL = 7 * 24 * 3600  # seconds a job's result stays in the backend


def celery_app(broker_url: str | None, visibility_timeout: int) -> Celery:
    from celery import Celery

    if not broker_url:
        raise UsageError("no broker: set IMAGECI_BROKER_URL (e.g. redis://127.0.0.1:6379/0) or pass --broker")
    app = Celery("imageci", broker=broker_url, backend=broker_url, set_as_current=False)
    transport = {"visibility_timeout": visibility_timeout}
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_track_started=True, result_extended=True, result_expires=RESULT_TTL,
        broker_transport_options=transport, result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        worker_hijack_root_logger=False, worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_create_missing_queues=True, task_default_queue="imageci.default",
        enable_utc=True, timezone="UTC",
    )
    return app
