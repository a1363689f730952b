"""Retention that deletes (``imageci retention``): each product's policy (its newest definition's
``retention`` and ``keep``) decides which versions become inactive and which are deleted; test logs
and results go by their own ages; then every blob nothing references any more (no version, log,
consumer snapshot, and not a young upload on its way to a commit) is deleted, with the unpacked
caches made from it. ``dry_run`` says all of it and changes nothing.

Concurrent runs are safe: a version is deleted only in a transaction that finds no run in progress
on it, and a run cannot start on a deleted version (catalog.delete_version / start_run take turns on
the version's row); blobs are chosen after the deletions commit. Pinned versions are never touched."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from imageci.app import caches
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import Args, operation
from imageci.app.session import Session
from imageci.app.upkeep import UNREFERENCED_GRACE
from imageci.app.versions import definition_of
from imageci.definitions.image import ImageDefinition, Retention
from imageci.errors import Forbidden, ImageciError, UnknownReferenceError
from imageci.fs import safe_rmtree
from imageci.policy.retention import VersionFacts, decide, never_passed
from imageci.store import lookups
from imageci.store.models import RunStatus, State, Version, label
from imageci.store.states import as_utc, utcnow

log = logging.getLogger("imageci.app")

class RetentionAction(BaseModel):
    image: str  # NAME@SERIAL
    digest: str  # sha256:…
    action: str  # inactive | deleted | kept
    reason: str


class RetentionReport(BaseModel):
    dry_run: bool
    now: datetime
    actions: list[RetentionAction] = []
    logs_dropped: int = 0
    attempts_removed: int = 0
    blobs_deleted: list[str] = []  # sha256:…
    bytes_freed: int = 0
    caches: list[str] = []  # what was trimmed from caches over their budget (IMAGECI_CACHE_BUDGET), or why not


def policy_of(versions: list[Version]) -> tuple[Retention, int]:
    """The product's retention and ``keep``: its newest version's definition's (the defaults without one)."""
    for v in sorted(versions, key=lambda v: v.serial, reverse=True):
        try:
            d = definition_of(v)
        except ImageciError:
            continue
        if d is not None:
            return d.retention, d.keep
    return Retention(), int(ImageDefinition.model_fields["keep"].default)


def _facts(session: Session, v: Version) -> VersionFacts:
    runs = session.catalog.runs(v.digest)
    return VersionFacts(id=v.id, label=label(v), serial=v.serial, state=v.state, created_at=as_utc(v.created_at),
                        pinned=v.pinned, passed=not never_passed([r.exit_code for r in runs]),
                        running=any(r.version_id == v.id and r.status == RunStatus.RUNNING for r in runs))


def retention(session: Session, *, name: str | None = None, dry_run: bool = False, now: datetime | None = None,
              by: Principal = LOCAL) -> RetentionReport:
    """Apply every product's retention (or ``name``'s) at ``now`` (default: now); scope ``admin`` (it deletes
    bytes of the whole store)."""
    if by.anonymous or by.channel is not None or Scope.ADMIN not in by.scopes:
        raise Forbidden(f"{by.name} may not apply retention: it needs scope 'admin'")
    now = now or utcnow()
    products = session.catalog.products()
    if name is not None and name not in products:
        raise UnknownReferenceError(f"unknown image {name!r}")
    actor = session.catalog.actor if by == LOCAL else by.name
    report = RetentionReport(dry_run=dry_run, now=now)
    deleted: list[int] = []
    kept_digests = {v.digest for v in session.catalog.versions(None, {State.STABLE})}
    kept_digests |= {v.digest for v in session.catalog.versions() if v.pinned is not None}
    logs: list[int] = []
    attempts: list[int] = []
    for product in [name] if name else products:
        versions = session.catalog.versions(product)
        policy, keep = policy_of(versions)
        for d in decide([_facts(session, v) for v in versions], policy, keep, now):
            v = d.version
            digest = f"sha256:{next(x.digest for x in versions if x.id == v.id)}"
            if d.action == "inactive":
                if not dry_run:
                    session.catalog.transition(v.id, State.INACTIVE, actor=actor, reason=d.reason)
                report.actions.append(RetentionAction(image=v.label, digest=digest, action="inactive", reason=d.reason))
                continue
            if dry_run or session.catalog.delete_version(v.id, actor=actor, reason=d.reason) is not None:
                deleted.append(v.id)
                report.actions.append(RetentionAction(image=v.label, digest=digest, action="deleted", reason=d.reason))
            else:
                report.actions.append(RetentionAction(image=v.label, digest=digest, action="kept",
                                                      reason="a run started on it, or it was pinned, meanwhile"))
        digests = sorted({v.digest for v in versions} - kept_digests)
        logs += session.catalog.old_logs(now - timedelta(days=policy.logs_days), digests, drop=not dry_run)
        gone = sorted({v.digest for v in versions if v.state == State.DELETED or v.id in deleted})
        attempts += session.catalog.old_attempts(now - timedelta(days=policy.attempts_days), gone,
                                                 remove=not dry_run, deleting=deleted if dry_run else ())
    report.logs_dropped, report.attempts_removed = len(logs), len(attempts)
    referenced = (lookups.referenced_blobs(session.reader, but_versions=deleted, but_logs=logs, but_attempts=attempts)
                  if dry_run else lookups.referenced_blobs(session.reader))
    cutoff = (now - UNREFERENCED_GRACE).timestamp()
    candidates = session.store.remove_unreferenced(referenced, cutoff, dry_run=True)
    report.bytes_freed = sum(_size(session, d) for d in candidates)
    blobs = candidates if dry_run else session.store.remove_unreferenced(referenced, cutoff)
    report.blobs_deleted = [f"sha256:{d}" for d in blobs]
    if not dry_run:
        for blob in blobs:
            _drop_caches(session, blob)
        report.caches = caches.trim_home(session)
    return report


def _size(session: Session, digest: str) -> int:
    return session.store.size(digest) or 0


def _drop_caches(session: Session, digest: str) -> None:
    """What was made from a deleted blob: its unpacked tree (and the files beside it), its unpacked snapshot."""
    for cache in (session.settings.rootfs_cache, session.settings.home / "suites",
                  session.settings.home / "consumers" / "snapshots"):
        tree = cache / digest
        if tree.is_dir() and not tree.is_symlink():
            safe_rmtree(tree)
        for extra in cache.glob(f"{digest}.*") if cache.is_dir() else ():
            if extra.is_file():
                extra.unlink(missing_ok=True)


class RetentionRequest(BaseModel):
    name: str | None = Field(default=None, max_length=63, description="only this product")
    dry_run: bool = False


class RetentionArgs(Args):
    body: RetentionRequest


@operation("POST", "/retention", request=RetentionArgs, answer=RetentionReport, tag="operations",
           needs_token=True, name="retention")
def retention_op(session: Session, req: RetentionArgs, by: Principal) -> RetentionReport:
    """Apply every product's retention policy (or ``name``'s), scope ``admin``: versions retired and
    deleted, old logs and results dropped, blobs nothing references deleted; ``dry_run`` only says so."""
    return retention(session, name=req.body.name, dry_run=req.body.dry_run, by=by)
