"""Keeping a home healthy: verify the store and caches, collect what dead
processes left, and say what this host can run."""

from __future__ import annotations

import time
from datetime import timedelta

from pydantic import BaseModel, Field

from imageci.app import caches, holds, livelogs
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import Args, NoArgs, operation
from imageci.app.session import Session
from imageci.build.caches import verify_caches
from imageci.engine.gc import collect_garbage
from imageci.errors import Forbidden
from imageci.store import lookups
from imageci.testbeds.hostcheck import Finding, check_host


class VerifyOutcome(BaseModel):
    blobs: int
    corrupt: list[str] = Field(default_factory=list)  # digests
    caches: int = 0
    changed: list[str] = Field(default_factory=list)  # what changed, one line each (discarded)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.changed


def _may_maintain(by: Principal, what: str) -> None:
    """The store and the caches are the whole server's: an admin token (of any namespace) looks after them."""
    if by.anonymous or by.channel is not None or Scope.ADMIN not in by.scopes:
        raise Forbidden(f"{by.name} may not {what}: it needs scope 'admin'")


def verify(session: Session, *, by: Principal = LOCAL) -> VerifyOutcome:
    """Re-hash every blob; compare every unpacked rootfs and VM asset with what it was made from."""
    _may_maintain(by, "verify the store")
    n, bad = session.store.verify_all()
    caches, changed = verify_caches(session.settings.rootfs_cache, session.settings.home / "vm", session.store)
    return VerifyOutcome(blobs=n, corrupt=bad, caches=caches, changed=changed)


class GcOutcome(BaseModel):
    removed: list[str]
    live: int  # live imageci processes whose resources were kept
    caches: list[str] = []  # what was trimmed from caches over their budget (IMAGECI_CACHE_BUDGET), or why not


# A blob no version or log references is garbage once it is this old: younger, it may be part of a
# publish (uploaded, not yet committed) or a build or import on its way to its commit.
UNREFERENCED_GRACE = timedelta(hours=1)


def gc(session: Session, *, force: bool = False, by: Principal = LOCAL) -> GcOutcome:
    """Remove this home's leftovers of dead imageci processes (and mark their runs aborted), blobs
    nothing references that are older than UNREFERENCED_GRACE (uploads never committed), and the live
    logs of runs that ended."""
    _may_maintain(by, "collect garbage")
    _ = session.catalog  # opening it marks runs whose process died as aborted
    removed, live = collect_garbage(session.settings, session.lock, force=force)
    cutoff = time.time() - UNREFERENCED_GRACE.total_seconds()
    for digest in session.store.remove_unreferenced(lookups.referenced_blobs(session.reader), cutoff):
        removed.append(f"removed unreferenced blob sha256:{digest}")
    removed += session.store.objects.sweep(cutoff)  # interrupted uploads the object store still holds
    removed += holds.sweep(session)  # (their testbeds went with the dead owners' leftovers above)
    if swept := livelogs.sweep(session):
        removed.append(f"removed the live logs of {swept} ended run(s)")
    return GcOutcome(removed=removed, live=live, caches=caches.trim_home(session))


def doctor(session: Session) -> list[Finding]:
    """What this host can run and why not; and each cache's size against its budget."""
    found = check_host(session.settings.home)
    for c in caches.usage(session.settings):
        state = "over budget: `imageci gc` trims it" if c.over else "within budget"
        found.append(Finding("caches", c.name, not c.over, f"{c.size / 1e6:.1f} MB in {c.entries} entries of "
                             f"{c.budget / 1e9:.1f} GB (IMAGECI_CACHE_BUDGET), {state}; {c.path}"))
    return found


class GcArgs(Args):
    force: bool = Field(default=False, description="even while another imageci process uses the home (over "
                                                   "the API always: the server is one)")


@operation("POST", "/verify", request=NoArgs, answer=VerifyOutcome, tag="operations", needs_token=True,
           name="verify")
def verify_op(session: Session, _req: NoArgs, by: Principal) -> VerifyOutcome:
    """Re-hash every blob of the server's store and check its caches (scope ``admin``)."""
    return verify(session, by=by)


@operation("POST", "/gc", request=GcArgs, answer=GcOutcome, tag="operations", needs_token=True, name="gc")
def gc_op(session: Session, req: GcArgs, by: Principal) -> GcOutcome:
    """Remove what dead imageci processes left on the server, and blobs nothing references that are
    past their grace (scope ``admin``); never what a live process holds."""
    return gc(session, force=req.force or by != LOCAL, by=by)
