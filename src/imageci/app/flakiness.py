"""Transient failures: tests that failed and then passed within one run (``imageci flaky``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from imageci.app.access import LOCAL, Principal
from imageci.app.operations import Args, operation
from imageci.app.queries import Row, bulk
from imageci.app.session import Session
from imageci.store import lookups
from imageci.store.states import utcnow


class FlakyAttempt(Row):
    attempt: int
    verdict: str


class FlakyRow(Row):
    image: str
    run: int
    test: str
    testbed: str
    failed_attempts: list[int]
    attempts: list[FlakyAttempt]


@bulk
def flaky(session: Session, name: str | None = None, since: timedelta = timedelta(days=30), *,
          viewer: Principal = LOCAL) -> list[FlakyRow]:
    """Every transient failure since ``since`` ago: a test that failed and then passed in one run."""
    return [FlakyRow(image=f"{e.product}@{e.serial}", run=e.run_id, test=e.test_id, testbed=e.testbed,
                     failed_attempts=e.failed_attempts,
                     attempts=[FlakyAttempt(attempt=n, verdict=v) for n, v in e.attempts])
            for e in lookups.transient_failures(session.reader, name, utcnow() - since)
            if viewer.sees(e.namespace, e.public, e.state)]


class FlakyArgs(Args):
    name: str | None = Field(default=None, description="only this product")
    since: str = Field(default="30d", description="how far back: 30d, 12h, 90m")


@operation("GET", "/flaky", request=FlakyArgs, answer=list[FlakyRow], tag="images")
def flaky_op(session: Session, req: FlakyArgs, by: Principal) -> list[FlakyRow]:
    """Transient failures the caller may see: tests that failed, then passed within one run."""
    from imageci.definitions.durations import duration_arg

    return flaky(session, req.name, duration_arg(req.since), viewer=by)
