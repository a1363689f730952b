"""Known failures (``definitions.knownfailures``): those of a suite's ``known-failures.yaml`` and those
kept in the catalog per product, added and removed from the CLI or the API (scope ``promote`` in the
product's namespace: a label changes what people read as the cause of a red gate). A run's engine
labels each failing attempt whose log matches one, and re-runs it as the entry says."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field, ValidationError

from imageci.app import access
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import MAX_ID, operation
from imageci.app.session import Session
from imageci.definitions.knownfailures import MAX_PATTERN, MAX_RETRY, Known, KnownFailure, known_for_suite
from imageci.definitions.suite import Suite
from imageci.engine.runner import KnownFn
from imageci.errors import UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.models import KnownFailureRow
from imageci.store.states import as_utc, utcnow


class KnownRow(BaseModel):
    id: int
    product: str
    test: str  # glob on test ids
    pattern: str  # a regular expression searched in the log
    tracker: str
    retry: int
    expires: date | None
    added_by: str
    added: datetime
    in_force: bool  # not expired today, not removed
    removed_by: str | None = None
    removed: datetime | None = None


class KnownRequest(BaseModel):
    product: str = Field(min_length=1, max_length=64)
    test: str = Field(min_length=1, max_length=255, description="glob on test ids")
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN, description="a regular expression searched in the log")
    tracker: str = Field(min_length=1, max_length=2000)
    retry: int = Field(default=0, ge=0, le=MAX_RETRY, description="re-run a matching failure up to this many times")
    expires: date | None = Field(default=None, description="the last day it applies (none: until removed)")


def _row(k: KnownFailureRow, product: str, day: date) -> KnownRow:
    return KnownRow(id=k.id, product=product, test=k.test, pattern=k.pattern, tracker=k.tracker, retry=k.retry,
                    expires=k.expires, added_by=k.created_by, added=as_utc(k.created_at),
                    in_force=k.removed_at is None and (k.expires is None or k.expires >= day),
                    removed_by=k.removed_by, removed=as_utc(k.removed_at) if k.removed_at else None)


def add(session: Session, request: KnownRequest, *, by: Principal = LOCAL) -> KnownRow:
    """Keep a known failure for ``request.product`` (scope ``promote`` in its namespace)."""
    info = access.resolve(session.reader, by, request.product)
    if info.name != request.product:
        raise UnknownReferenceError(f"unknown image {request.product!r}")
    by.require(Scope.PROMOTE, info.namespace, f"label known failures of {info.name}")
    try:
        entry = KnownFailure(test=request.test, pattern=request.pattern, tracker=request.tracker,
                             retry=request.retry, expires=request.expires)
    except ValidationError as exc:
        raise UsageError("; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())) \
            from None
    if entry.expires is not None and entry.expires < utcnow().date():
        raise UsageError(f"expires {entry.expires.isoformat()} is in the past")
    row = session.catalog.add_known_failure(KnownFailureRow(
        test=entry.test, pattern=entry.pattern, tracker=entry.tracker, retry=entry.retry, expires=entry.expires,
        created_by=session.catalog.actor if by == LOCAL else by.name, created_at=utcnow()), info.name)
    return _row(row, info.name, utcnow().date())


def remove(session: Session, entry_id: int, *, by: Principal = LOCAL) -> KnownRow:
    """Remove a known failure (scope ``promote`` in its product's namespace); it is kept, marked removed."""
    found = {row.id: name for row, name in session.catalog.known_failures(removed=True)}
    product = next((p for p in lookups.products(session.reader) if p[0] == found.get(entry_id)), None)
    if product is None or not by.sees_product(product[1], product[2]):
        raise UnknownReferenceError(f"no known failure {entry_id}")
    by.require(Scope.PROMOTE, product[1], f"remove known failure {entry_id}")
    row = session.catalog.remove_known_failure(entry_id, actor=session.catalog.actor if by == LOCAL else by.name)
    return _row(row, product[0], utcnow().date())


def entries(session: Session, product: str | None = None, *, removed: bool = False,
            viewer: Principal = LOCAL) -> list[KnownRow]:
    """The catalog's known failures of the products ``viewer`` may see (of ``product``)."""
    seen = {p[0] for p in lookups.products(session.reader) if viewer.sees_product(p[1], p[2])}
    if product is not None and product not in seen:
        raise UnknownReferenceError(f"unknown image {product!r}")
    day = utcnow().date()
    return [_row(k, name, day) for k, name in session.catalog.known_failures(product, removed=removed)
            if name in seen]


def known_for(session: Session, product: str, suite: Suite | None) -> Known:
    """What a run of ``product``'s version knows: its suite's entries, then the catalog's."""
    own = known_for_suite(suite.path if suite is not None else None)
    kept = tuple(KnownFailure(test=k.test, pattern=k.pattern, tracker=k.tracker, retry=k.retry, expires=k.expires)
                 for k, _name in session.catalog.known_failures(product))
    return Known(own.entries + kept)


def matcher(known: Known) -> KnownFn | None:
    """The engine's view of ``known``: a failing log → (tracker, re-runs)."""
    if not known.entries:
        return None
    day = utcnow().date()

    def match(test_id: str, log: bytes) -> tuple[str, int] | None:
        found = known.match(test_id, log, day)
        return (found.tracker, found.retry) if found is not None else None

    return match


class KnownListArgs(BaseModel):
    product: str | None = None
    removed: bool = False


class KnownAddArgs(BaseModel):
    body: KnownRequest


class KnownRemoveArgs(BaseModel):
    entry_id: int = Field(ge=1, le=MAX_ID)


@operation("GET", "/known-failures", request=KnownListArgs, answer=list[KnownRow], tag="images",
           name="known_failures_list")
def known_list(session: Session, req: KnownListArgs, by: Principal) -> list[KnownRow]:
    """Known failures kept here for the products the caller may see (removed ones too with ``removed``)."""
    return entries(session, req.product, removed=req.removed, viewer=by)


@operation("POST", "/known-failures", request=KnownAddArgs, answer=KnownRow, tag="images", status=201,
           needs_token=True, name="known_failures_add")
def known_add(session: Session, req: KnownAddArgs, by: Principal) -> KnownRow:
    """Keep a known failure for a product (scope ``promote``): a failure of its tests whose log matches the
    pattern is labelled with the tracker (and re-run ``retry`` times); it never passes because of it."""
    return add(session, req.body, by=by)


@operation("POST", "/known-failures/{entry_id}/remove", request=KnownRemoveArgs, answer=KnownRow, tag="images",
           needs_token=True, name="known_failures_remove")
def known_remove(session: Session, req: KnownRemoveArgs, by: Principal) -> KnownRow:
    """Remove a known failure kept here (scope ``promote``); it stays listed with ``removed``."""
    return remove(session, req.entry_id, by=by)
