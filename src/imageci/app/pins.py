"""Pinned versions (a release, a version a customer runs): never pruned, retired or deleted by retention,
whatever its policy says. Pinning and unpinning need scope ``promote`` in the product's namespace and are
audited as events."""

from __future__ import annotations

from pydantic import BaseModel, Field

from imageci.app import access
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import RefArgs, operation
from imageci.app.session import Session
from imageci.store.models import label


class PinRequest(BaseModel):
    reason: str = Field(min_length=1, max_length=4000, description="why it is kept, e.g. 'release 2026.11'")


class PinRow(BaseModel):
    image: str  # NAME@SERIAL
    digest: str
    state: str
    pinned: str | None  # the reason (None: not pinned)


def pin(session: Session, ref: str, reason: str | None, *, by: Principal = LOCAL) -> PinRow:
    """Pin the version ``ref`` names with ``reason`` (None: unpin it)."""
    info = access.resolve(session.reader, by, ref)
    by.require(Scope.PROMOTE, info.namespace, f"{'pin' if reason is not None else 'unpin'} {info.label}")
    v = session.catalog.pin(info.id, reason.strip() if reason is not None else None,
                            actor=None if by == LOCAL else by.name)
    return PinRow(image=label(v), digest=f"sha256:{v.digest}", state=v.state, pinned=v.pinned)


class PinArgs(RefArgs):
    body: PinRequest


@operation("POST", "/images/{ref}/pin", request=PinArgs, answer=PinRow, tag="images", needs_token=True, name="pin")
def pin_op(session: Session, req: PinArgs, by: Principal) -> PinRow:
    """Pin a version (scope ``promote``): retention never retires nor deletes it; audited."""
    return pin(session, req.ref, req.body.reason, by=by)


@operation("DELETE", "/images/{ref}/pin", request=RefArgs, answer=PinRow, tag="images", needs_token=True,
           name="unpin")
def unpin_op(session: Session, req: RefArgs, by: Principal) -> PinRow:
    """Unpin a version (scope ``promote``); audited."""
    return pin(session, req.ref, None, by=by)
