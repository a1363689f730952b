"""How often each known failure labelled a failing attempt: the flaky report's count of known failures
(``imageci flaky``). Plain SQL through ``Session.reader`` (``store.failurelookups``): no ORM import."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from imageci.app.access import LOCAL, Principal
from imageci.app.operations import operation
from imageci.app.session import Session
from imageci.store.failurelookups import known_counts
from imageci.store.states import utcnow


class KnownCountRow(BaseModel):
    product: str
    test: str
    tracker: str
    failures: int  # failing attempts its known failure labelled
    last: datetime


class KnownCountArgs(BaseModel):
    name: str | None = Field(default=None, description="only this product")
    since: str = Field(default="30d", description="how far back: 30d, 12h, 90m")


def counts(session: Session, name: str | None, since: timedelta, *, viewer: Principal = LOCAL) -> list[KnownCountRow]:
    """Failures each known failure labelled since ``since`` ago, by product, test and tracker."""
    return [KnownCountRow(product=c.product, test=c.test_id, tracker=c.tracker, failures=c.failures, last=c.last)
            for c in known_counts(session.reader, name, utcnow() - since) if viewer.sees_product(c.namespace, c.public)]


@operation("GET", "/flaky/known", request=KnownCountArgs, answer=list[KnownCountRow], tag="images",
           name="flaky_known")
def flaky_known(session: Session, req: KnownCountArgs, by: Principal) -> list[KnownCountRow]:
    """How many failing attempts each known failure labelled (by product, test and tracker) since ``since``:
    the flaky report's count of known failures."""
    from imageci.definitions.durations import duration_arg

    return counts(session, req.name, duration_arg(req.since), viewer=by)
