"""Quarantine entries: those of the suite stored with each product's newest
testing version (``quarantine.yaml``) and those kept in the catalog, added and
lifted from the CLI, the API or the dashboard. A catalog entry is the same
data as a file entry (test glob, tracker, expiry, mode, scope, reason) and
applies to every run and gate of its product like one; adding or lifting one
needs scope ``promote`` in the product's namespace (it decides what blocks a
promotion), and both are recorded with who and why."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from imageci.app import access
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import MAX_ID, operation
from imageci.app.overview import overview
from imageci.app.session import Session
from imageci.app.versions import suite_of
from imageci.definitions.quarantine import QuarantineEntry, quarantine_for_suite
from imageci.errors import ImageciError, UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.models import Quarantine
from imageci.store.states import as_utc, utcnow


class QuarantineRow(BaseModel):
    product: str
    id: int | None = None  # a catalog entry's (None: a suite file's)
    image: str | None = None  # NAME@SERIAL whose suite holds a file entry
    test: str  # glob on test ids
    tracker: str
    expires: date
    mode: str  # warn | skip
    testbeds: list[str] | None
    arch: list[str] | None
    reason: str
    source: str  # FILE:LINE in the suite, or "catalog #ID"
    added_by: str | None = None  # a catalog entry's
    added: datetime | None = None
    in_force: bool  # not expired today (and not lifted)
    lifted_by: str | None = None
    lifted: datetime | None = None
    lift_reason: str = ""


class QuarantineRequest(BaseModel):
    product: str = Field(min_length=1, max_length=64)
    test: str = Field(min_length=1, max_length=255, description="glob on test ids")
    tracker: str = Field(min_length=1, max_length=2000)
    expires: date = Field(description="the last day it applies")
    mode: Literal["warn", "skip"] = "warn"
    testbeds: list[str] | None = Field(default=None, max_length=64)
    arch: list[str] | None = Field(default=None, max_length=64)
    reason: str = Field(min_length=1, max_length=4000, description="why: shown with every waived result")


class LiftRequest(BaseModel):
    reason: str = Field(default="", max_length=4000)


def _catalog_row(q: Quarantine, product: str, day: date) -> QuarantineRow:
    return QuarantineRow(product=product, id=q.id, test=q.test, tracker=q.tracker, expires=q.expires, mode=q.mode,
                         testbeds=json.loads(q.testbeds) if q.testbeds else None,
                         arch=json.loads(q.arch) if q.arch else None, reason=q.reason, source=f"catalog #{q.id}",
                         added_by=q.created_by, added=as_utc(q.created_at),
                         in_force=q.lifted_at is None and q.expires >= day, lifted_by=q.lifted_by,
                         lifted=as_utc(q.lifted_at) if q.lifted_at else None, lift_reason=q.lift_reason)


def add(session: Session, request: QuarantineRequest, *, by: Principal = LOCAL) -> QuarantineRow:
    """Keep a quarantine entry for ``request.product`` in the catalog (scope ``promote`` in its namespace)."""
    info = access.resolve(session.reader, by, request.product)
    if info.name != request.product:
        raise UnknownReferenceError(f"unknown image {request.product!r}")
    by.require(Scope.PROMOTE, info.namespace, f"quarantine tests of {info.name}")
    try:
        entry = QuarantineEntry(test=request.test, tracker=request.tracker, expires=request.expires,
                                mode=request.mode, testbeds=tuple(request.testbeds) if request.testbeds else None,
                                arch=tuple(request.arch) if request.arch else None, reason=request.reason)
    except ValidationError as exc:
        raise UsageError("; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())) \
            from None
    if entry.expires < utcnow().date():
        raise UsageError(f"expires {entry.expires.isoformat()} is in the past")
    row = session.catalog.add_quarantine(Quarantine(
        test=entry.test, tracker=entry.tracker, expires=entry.expires, mode=entry.mode,
        testbeds=json.dumps(list(entry.testbeds)) if entry.testbeds else None,
        arch=json.dumps(list(entry.arch)) if entry.arch else None, reason=entry.reason,
        created_by=session.catalog.actor if by == LOCAL else by.name, created_at=utcnow()), info.name)
    return _catalog_row(row, info.name, utcnow().date())


def lift(session: Session, entry_id: int, reason: str = "", *, by: Principal = LOCAL) -> QuarantineRow:
    """Lift a catalog entry (scope ``promote`` in its product's namespace); it is kept, marked lifted."""
    found = {row.id: (row, name) for row, name in session.catalog.quarantines(lifted=True)}
    if entry_id not in found:
        raise UnknownReferenceError(f"no quarantine entry {entry_id}")
    name = found[entry_id][1]
    product = next((p for p in lookups.products(session.reader) if p[0] == name), None)
    if product is None or not by.sees_product(product[1], product[2]):
        raise UnknownReferenceError(f"no quarantine entry {entry_id}")
    by.require(Scope.PROMOTE, product[1], f"lift quarantine entry {entry_id}")
    row = session.catalog.lift_quarantine(entry_id, actor=session.catalog.actor if by == LOCAL else by.name,
                                          reason=reason)
    return _catalog_row(row, name, utcnow().date())


def entries(session: Session, *, viewer: Principal = LOCAL, today: date | None = None,
            product: str | None = None, lifted: bool = False) -> list[QuarantineRow]:
    """Every quarantine entry of the products ``viewer`` may see (of ``product``): each one's newest suite's,
    then the catalog's (lifted ones too with ``lifted``)."""
    day = today or utcnow().date()
    rows = []
    cards = [c for c in overview(session, viewer=viewer, gates=False) if product is None or c.name == product]
    if product is not None and not cards:
        raise UnknownReferenceError(f"unknown image {product!r}")
    for card in cards:
        newest = next((c.image for c in card.channels if c.channel == "testing" and c.image), None)
        if newest is None:
            continue
        try:
            suite = suite_of(session, session.catalog.resolve(newest), warn=False)
            quarantine = quarantine_for_suite(suite.path, None)
        except ImageciError:
            continue  # no suite stored (an imported image), or one that no longer loads: no file entries
        for loc in quarantine.entries:
            e = loc.entry
            source = loc.path.removeprefix(str(suite.path) + "/") if suite.path else loc.path
            rows.append(QuarantineRow(product=card.name, image=newest, test=e.test, tracker=e.tracker,
                                      expires=e.expires, mode=e.mode,
                                      testbeds=list(e.testbeds) if e.testbeds else None,
                                      arch=list(e.arch) if e.arch else None, reason=e.reason,
                                      source=f"{source}:{loc.line}", in_force=e.expires >= day))
    seen = {c.name for c in cards}
    for q, name in session.catalog.quarantines(product, lifted=lifted):
        if name in seen:
            rows.append(_catalog_row(q, name, day))
    return rows


class QuarantineListArgs(BaseModel):
    product: str | None = None
    lifted: bool = False


class QuarantineAddArgs(BaseModel):
    body: QuarantineRequest


class LiftArgs(BaseModel):
    entry_id: int = Field(ge=1, le=MAX_ID)
    body: LiftRequest


@operation("GET", "/quarantine", request=QuarantineListArgs, answer=list[QuarantineRow], tag="images",
           name="quarantine_list")
def quarantine_list(session: Session, req: QuarantineListArgs, by: Principal) -> list[QuarantineRow]:
    """Quarantine entries of the products the caller may see: each newest suite's ``quarantine.yaml``
    and those kept here (lifted ones too with ``lifted``)."""
    return entries(session, viewer=by, product=req.product, lifted=req.lifted)


@operation("POST", "/quarantine", request=QuarantineAddArgs, answer=QuarantineRow, tag="images", status=201,
           needs_token=True, name="quarantine_add")
def quarantine_add(session: Session, req: QuarantineAddArgs, by: Principal) -> QuarantineRow:
    """Keep a quarantine entry for a product (scope ``promote`` in its namespace): its tests' failures
    warn (or they are skipped) until it expires or is lifted; audited as the token's name."""
    return add(session, req.body, by=by)


@operation("POST", "/quarantine/{entry_id}/lift", request=LiftArgs, answer=QuarantineRow, tag="images",
           needs_token=True, name="quarantine_lift")
def quarantine_lift(session: Session, req: LiftArgs, by: Principal) -> QuarantineRow:
    """Lift a quarantine entry kept here (scope ``promote``); it stays listed with ``lifted``."""
    return lift(session, req.entry_id, req.body.reason, by=by)
