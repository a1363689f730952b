"""The catalog: products, versions, channels, audited state transitions, runs
and test attempts. One class over SQLAlchemy sessions; callers get ORM objects
detached from their session (``expire_on_commit=False``)."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from imageci.errors import ImageciError, UnknownReferenceError, UsageError
from imageci.store import database, lookups
from imageci.store.models import (
    DEFAULT_NAMESPACE,
    SUITE,
    TRANSITIONS,
    Artifact,
    Attempt,
    Consumer,
    Event,
    Product,
    Push,
    Quarantine,
    Run,
    RunStatus,
    Schedule,
    State,
    Token,
    Version,
    VulnFeed,
    VulnRecord,
    as_utc,
    utcnow,
)
from imageci.store.reading import SQLITE_TIME, Reader, Row
from imageci.store.refs import ImageRef


def current_actor() -> str:
    """user@host of this process (Settings.actor, IMAGECI_ACTOR, overrides it)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class NewArtifact:
    kind: str
    filename: str
    digest: str
    size: int


class TransitionError(UsageError):
    pass


@dataclass(frozen=True)
class Evidence:
    """What a gate read: the newest attempt recorded for the image's bytes then, and its suite."""

    last_attempt: int  # 0: none
    suite: str | None  # the suite snapshot's digest
    waivers: int = 0  # the product's catalog quarantine changes (grows with every entry added or lifted)


class VersionDeleted(UsageError):
    """A version whose bytes retention deleted: nothing can run on it."""


class EvidenceChanged(ImageciError):
    """Results were recorded (or the suite changed) between a gate's evaluation and its promotion."""


_ATTEMPT_COLUMNS = ("run_id", "image_digest", "test_id", "test_digest", "testbed", "attempt", "started_at",
                    "ended_at", "exit_code", "verdict", "reason", "log_digest", "idempotency_key", "worker")


class Catalog:
    def __init__(self, engine: Engine, url: str = "", actor: str | None = None) -> None:
        self.engine = engine
        self.url = url or str(engine.url)
        self.actor = actor or current_actor()  # who audit events and runs name, unless a call says
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._turns: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext())

    @classmethod
    def open(cls, url: str, actor: str | None = None) -> Catalog:
        """Open (and migrate) the catalog at ``url``, creating it only where nothing exists.
        A damaged or foreign database raises CatalogUnusableError and is left as it is."""
        database.check_file(url)
        engine = database.make_engine(url)
        try:
            database.upgrade(engine)
        except DatabaseError as exc:
            engine.dispose()
            raise database.unusable(exc, url) from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, url, actor)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction. On SQLite, this process's transactions take turns (a lock): SQLite lets one
        writer at a time anyway, and its busy handler makes the others sleep and poll, which costs far
        more than waiting in line. Other processes still meet SQLite's own lock (busy_timeout)."""
        try:
            with self._turns, self._sessions() as s, s.begin():
                yield s
        except IntegrityError:
            raise  # a constraint, not damage (callers retry on it)
        except DatabaseError as exc:
            raise database.unusable(exc, self.url) from exc

    # ---- products and versions -------------------------------------------------

    def _product(self, s: Session, name: str, create: bool = False,
                 namespace: str = DEFAULT_NAMESPACE) -> Product | None:
        product = s.scalar(select(Product).where(Product.name == name))
        if product is None and create:
            product = Product(name=name, created_at=utcnow(), namespace=namespace, public=False)
            s.add(product)
            s.flush()
        return product

    @staticmethod
    def _next_serial(s: Session, product: Product, now: datetime) -> str:
        day = now.strftime("%Y%m%d")
        last = s.scalar(select(func.max(Version.serial)).where(
            Version.product_id == product.id, Version.serial.like(f"{day}.%")))
        n = int(last.split(".")[1]) + 1 if last else 1
        return f"{day}.{n:03d}"

    def register_version(self, name: str, digest: str, artifacts: Sequence[NewArtifact], *,
                         input_hash: str | None, definition: str | None, build_info: dict[str, Any],
                         architecture: str = "amd64", actor: str | None = None,
                         publish_to_testing: bool = True, namespace: str = DEFAULT_NAMESPACE) -> Version:
        """Record a complete version and (by default) publish it to ``testing``,
        all in one transaction: a version is never visible half-registered. A new product is made
        in ``namespace``."""
        actor = actor or self.actor
        for attempt in range(5):
            try:
                with self.session() as s:
                    product = self._product(s, name, create=True, namespace=namespace)
                    assert product is not None
                    now = utcnow()
                    version = Version(product_id=product.id, serial=self._next_serial(s, product, now),
                                      digest=digest, input_hash=input_hash, architecture=architecture,
                                      state=State.CREATED.value,
                                      created_at=now, definition=definition,
                                      build_info=json.dumps(build_info, sort_keys=True))
                    version.artifacts = [Artifact(kind=a.kind, filename=a.filename, digest=a.digest, size=a.size)
                                         for a in artifacts]
                    s.add(version)
                    s.flush()
                    s.add(Event(version_id=version.id, from_state=None, to_state=State.CREATED.value,
                                actor=actor, reason="registered", at=now))
                    if publish_to_testing:
                        version.state = State.TESTING.value
                        s.add(Event(version_id=version.id, from_state=State.CREATED.value,
                                    to_state=State.TESTING.value, actor=actor,
                                    reason="published to channel testing", at=now))
                    version.product = product
                return version
            except IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    def set_test_config(self, version_id: int, definition: str | None, artifacts: Sequence[NewArtifact], *,
                        drop: set[str] | None = None, build_info: dict[str, Any] | None = None) -> Version:
        """Record the version's current test configuration: the definition text (its ``tests`` and
        ``keep``, which are not build inputs, may have changed) and artifacts that replace those of the
        same kind (the suite snapshot); ``drop`` removes artifacts of those kinds. The image bytes are
        untouched; evidence is keyed by test digest."""
        with self.session() as s:
            v = s.get(Version, version_id, options=[selectinload(Version.product), selectinload(Version.artifacts)])
            if v is None:
                raise UnknownReferenceError(f"no version with id {version_id}")
            v.definition = definition
            if build_info is not None:
                v.build_info = json.dumps(build_info, sort_keys=True)
            kinds = {a.kind for a in artifacts} | (drop or set())
            v.artifacts = [a for a in v.artifacts if a.kind not in kinds] + [
                Artifact(kind=a.kind, filename=a.filename, digest=a.digest, size=a.size) for a in artifacts]
            s.flush()
            return v

    def attach(self, version_id: int, artifacts: Sequence[NewArtifact]) -> Version:
        """Add artifacts derived from the version's bytes (its BOM, its file index), replacing those of
        the same kinds; nothing else of the version changes."""
        with self.session() as s:
            v = s.get(Version, version_id, options=[selectinload(Version.product), selectinload(Version.artifacts)])
            if v is None:
                raise UnknownReferenceError(f"no version with id {version_id}")
            kinds = {a.kind for a in artifacts}
            v.artifacts = [a for a in v.artifacts if a.kind not in kinds] + [
                Artifact(kind=a.kind, filename=a.filename, digest=a.digest, size=a.size) for a in artifacts]
            s.flush()
            return v

    def transition(self, version_id: int, to: State, *, actor: str | None = None, reason: str = "") -> Version:
        with self.session() as s:
            v = s.get(Version, version_id, options=[selectinload(Version.product)])
            if v is None:
                raise UnknownReferenceError(f"no version with id {version_id}")
            frm = State(v.state)
            if to not in TRANSITIONS[frm]:
                raise TransitionError(f"{v.product.name}@{v.serial}: cannot go from {frm} to {to}")
            v.state = to.value
            s.add(Event(version_id=v.id, from_state=frm.value, to_state=to.value,
                        actor=actor or self.actor, reason=reason, at=utcnow()))
            return v

    def record_push(self, version_id: int, destination: str, manifest_digest: str, *,
                    actor: str | None = None) -> Push:
        with self.session() as s:
            push = Push(version_id=version_id, destination=destination, manifest_digest=manifest_digest,
                        actor=actor or self.actor, at=utcnow())
            s.add(push)
            s.flush()
            return push

    def pushes(self, version_id: int) -> list[Push]:
        with self.session() as s:
            return list(s.scalars(select(Push).where(Push.version_id == version_id).order_by(Push.id)))

    def evidence(self, version: Version) -> Evidence:
        with self.session() as s:
            last = s.scalar(select(func.max(Attempt.id)).where(Attempt.image_digest == version.digest))
            waivers = self._waivers(s, version.product_id)
        return Evidence(int(last or 0), next((a.digest for a in version.artifacts if a.kind == SUITE), None),
                        waivers)

    @staticmethod
    def _waivers(s: Session, product_id: int) -> int:
        """A stamp of the product's catalog quarantine: the newest entry's id plus the entries lifted, so any
        entry added or lifted changes it."""
        newest, lifted = s.execute(select(func.coalesce(func.max(Quarantine.id), 0), func.count(Quarantine.lifted_at))
                                   .where(Quarantine.product_id == product_id)).one()
        return int(newest) + int(lifted)

    def import_vulns(self, feed: VulnFeed, records: Sequence[Mapping[str, Any]], *,
                     actor: str | None = None) -> VulnFeed:
        """Replace the feed of ``feed.name`` (if any) with this one and its records, in one transaction:
        a reader sees the old feed or the new one, never part of either."""
        with self.session() as s:
            old = s.scalar(select(VulnFeed).where(VulnFeed.name == feed.name))
            if old is not None:
                s.execute(delete(VulnRecord).where(VulnRecord.feed_id == old.id))
                s.delete(old)
                s.flush()
            feed.imported_by = actor or self.actor
            feed.imported_at = utcnow()
            s.add(feed)
            s.flush()
            batch = 5000
            for start in range(0, len(records), batch):
                s.execute(insert(VulnRecord), [{**r, "feed_id": feed.id} for r in records[start:start + batch]])
            return feed

    def add_quarantine(self, entry: Quarantine, product: str) -> Quarantine:
        with self.session() as s:
            found = self._product(s, product)
            if found is None:
                raise UnknownReferenceError(f"unknown image {product!r}")
            entry.product_id = found.id
            s.add(entry)
            s.flush()
            return entry

    def lift_quarantine(self, entry_id: int, *, actor: str, reason: str) -> Quarantine:
        with self.session() as s:
            entry = s.get(Quarantine, entry_id)
            if entry is None:
                raise UnknownReferenceError(f"no quarantine entry {entry_id}")
            if entry.lifted_at is not None:
                raise UsageError(f"quarantine entry {entry_id} was lifted at "
                                 f"{as_utc(entry.lifted_at).isoformat(timespec='seconds')} by {entry.lifted_by}")
            entry.lifted_at, entry.lifted_by, entry.lift_reason = utcnow(), actor, reason
            return entry

    # ---- schedules ---------------------------------------------------------------

    def schedule(self, key: str, cron: str, now: datetime) -> Schedule:
        """The schedule ``key`` as last recorded; a new one (or one whose expression changed) is recorded as seen
        ``now``, with nothing fired yet."""
        with self.session() as s:
            row = s.scalar(select(Schedule).where(Schedule.key == key))
            if row is None:
                row = Schedule(key=key, cron=cron, seen_at=now, outcome="")
                s.add(row)
            elif row.cron != cron:
                row.cron, row.seen_at, row.fired_for = cron, now, None
            s.flush()
            return row

    def claim_fire(self, key: str, scheduled_for: datetime, now: datetime) -> bool:
        """Claim the fire of ``key`` for ``scheduled_for`` (compare-and-set); False: someone did already."""
        with self.session() as s:
            done = s.execute(update(Schedule).where(Schedule.key == key, (Schedule.fired_for.is_(None))
                                                    | (Schedule.fired_for < scheduled_for))
                             .values(fired_for=scheduled_for, fired_at=now, outcome="running", exit_code=None)
                             .execution_options(synchronize_session=False))
            return getattr(done, "rowcount", 1) == 1

    def fired(self, key: str, outcome: str, exit_code: int) -> None:
        with self.session() as s:
            s.execute(update(Schedule).where(Schedule.key == key).values(outcome=outcome, exit_code=exit_code))

    def schedules(self) -> list[Schedule]:
        with self.session() as s:
            return list(s.scalars(select(Schedule).order_by(Schedule.key)))

    # ---- consumers ---------------------------------------------------------------

    def add_consumer(self, consumer: Consumer, product: str) -> Consumer:
        """Register ``consumer`` for ``product``; a name in use (even by a removed one) is refused."""
        with self.session() as s:
            found = self._product(s, product)
            if found is None:
                raise UnknownReferenceError(f"unknown image {product!r}")
            if s.scalar(select(Consumer.id).where(Consumer.name == consumer.name)) is not None:
                raise UsageError(f"a consumer named {consumer.name!r} exists (a removed one keeps its name); "
                                 "choose another name")
            consumer.product_id = found.id
            s.add(consumer)
            s.flush()
            return consumer

    def remove_consumer(self, name: str, *, actor: str) -> Consumer:
        with self.session() as s:
            row = s.scalar(select(Consumer).where(Consumer.name == name))
            if row is None or row.removed_at is not None:
                raise UnknownReferenceError(f"no consumer named {name!r}")
            row.removed_at, row.removed_by = utcnow(), actor
            return row

    def consumers(self, product: str | None = None, *, removed: bool = False) -> list[tuple[Consumer, str]]:
        """The registered consumers (of ``product``) with their product's name, by name; removed ones only
        with ``removed``."""
        with self.session() as s:
            q = select(Consumer, Product.name).join(Product, Product.id == Consumer.product_id)
            if product is not None:
                q = q.where(Product.name == product)
            if not removed:
                q = q.where(Consumer.removed_at.is_(None))
            return [(row, str(name)) for row, name in s.execute(q.order_by(Consumer.name))]

    def set_consumer_snapshot(self, consumer_id: int, snapshot: str, revision: str | None) -> None:
        with self.session() as s:
            s.execute(update(Consumer).where(Consumer.id == consumer_id)
                      .values(snapshot=snapshot, revision=revision, snapshot_at=utcnow()))

    def quarantines(self, product: str | None = None, *, lifted: bool = False) -> list[tuple[Quarantine, str]]:
        """The catalog's quarantine entries (of ``product``), with their product's name, oldest first; lifted
        ones only with ``lifted``."""
        with self.session() as s:
            q = select(Quarantine, Product.name).join(Product, Product.id == Quarantine.product_id)
            if product is not None:
                q = q.where(Product.name == product)
            if not lifted:
                q = q.where(Quarantine.lifted_at.is_(None))
            return [(row, str(name)) for row, name in s.execute(q.order_by(Quarantine.id))]

    def promote_on(self, version_id: int, evidence: Evidence | None, *, actor: str | None = None,
                   reason: str = "", also: Sequence[tuple[int, Evidence | None]] = ()) -> Version:
        """testing → stable as one compare-and-set: only while the version is still ``testing`` and,
        with ``evidence``, while nothing the gate read has changed (no attempt recorded for its bytes
        since, the same suite); else nothing is written. Two promotions at once promote once. ``also``:
        more versions (the build's other architectures) that move with it in the same transaction,
        each on the same terms."""
        with self.session() as s:
            first = self._promote_in(s, version_id, evidence, actor, reason)
            for other_id, other_evidence in also:
                self._promote_in(s, other_id, other_evidence, actor, f"{reason}; with {first.product.name}@"
                                 f"{first.serial}")
            return first

    def _promote_in(self, s: Session, version_id: int, evidence: Evidence | None, actor: str | None,
                    reason: str) -> Version:
        moved = s.execute(update(Version).where(Version.id == version_id, Version.state == State.TESTING.value)
                          .values(state=State.STABLE.value).execution_options(synchronize_session=False))
        v = s.get(Version, version_id, options=[selectinload(Version.product), selectinload(Version.artifacts)],
                  populate_existing=True)
        if v is None:
            raise UnknownReferenceError(f"no version with id {version_id}")
        if getattr(moved, "rowcount", 1) != 1:
            raise TransitionError(f"{v.product.name}@{v.serial} is {v.state}; only testing versions can be "
                                  "promoted")
        if evidence is not None:
            last = int(s.scalar(select(func.max(Attempt.id)).where(Attempt.image_digest == v.digest)) or 0)
            suite = next((a.digest for a in v.artifacts if a.kind == SUITE), None)
            if (last != evidence.last_attempt or suite != evidence.suite
                    or self._waivers(s, v.product_id) != evidence.waivers):
                raise EvidenceChanged(f"{v.product.name}@{v.serial}: results were recorded, its suite changed or "
                                      "a quarantine entry was added or lifted while its gate was evaluated")
        s.add(Event(version_id=v.id, from_state=State.TESTING.value, to_state=State.STABLE.value,
                    actor=actor or self.actor, reason=reason, at=utcnow()))
        return v

    def find_by_input_hash(self, name: str, input_hash: str) -> Version | None:
        with self.session() as s:
            return s.scalar(
                select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
                .where(Product.name == name, Version.input_hash == input_hash,
                       Version.state.not_in([State.INACTIVE.value, State.DELETED.value]))
                .order_by(Version.serial.desc()).limit(1))

    def find_by_digest(self, name: str, digest: str) -> Version | None:
        with self.session() as s:
            return s.scalar(
                select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
                .where(Product.name == name, Version.digest == digest, Version.state != State.DELETED.value)
                .order_by(Version.serial.desc()).limit(1))

    def products(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(Product.name).order_by(Product.name)))

    def versions(self, name: str | None = None, states: set[State] | None = None) -> list[Version]:
        with self.session() as s:
            q = select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
            if name:
                q = q.where(Product.name == name)
            if states:
                q = q.where(Version.state.in_([st.value for st in states]))
            return list(s.scalars(q.order_by(Product.name, Version.serial)))

    def resolve(self, ref: str | ImageRef) -> Version:
        """The version a reference names (``store.lookups.resolve``); unknown names list the close ones."""
        with self.session() as s:
            info = lookups.resolve(SqlAlchemyReader(s), ref)
            version = s.scalar(select(Version).options(selectinload(Version.product), selectinload(Version.artifacts))
                               .where(Version.id == info.id))
            assert version is not None
            return version

    def reader(self) -> Reader:
        """Plain-SQL read access for ``store.lookups``, a connection per statement."""
        return SqlAlchemyReader(self.engine)

    # ---- namespaces and tokens ------------------------------------------------

    def set_product(self, name: str, *, namespace: str | None = None, public: bool | None = None) -> Product:
        """Move product ``name`` to ``namespace`` and/or make it public or private."""
        with self.session() as s:
            product = self._product(s, name)
            if product is None:
                raise UnknownReferenceError(f"unknown image {name!r}")
            if namespace is not None:
                product.namespace = namespace
            if public is not None:
                product.public = public
            return product

    def add_token(self, token: Token) -> Token:
        with self.session() as s:
            if s.scalar(select(Token.id).where(Token.name == token.name)) is not None:
                raise UsageError(f"a token named {token.name!r} exists; revoke it or choose another name")
            s.add(token)
            s.flush()
            return token

    def revoke_token(self, name: str, at: datetime) -> Token:
        with self.session() as s:
            token = s.scalar(select(Token).where(Token.name == name))
            if token is None:
                raise UsageError(f"no token named {name!r}")
            if token.revoked_at is None:
                token.revoked_at = at
            return token

    # ---- runs and attempts -----------------------------------------------------

    def start_run(self, image_digest: str, version_id: int | None, options: dict[str, Any], *,
                  owner: str | None = None) -> int:
        """A run in progress; ``owner`` is the lock file its process holds (imageci.owners), so a
        later imageci on this host can tell a run whose process died (see :meth:`abort_dead_runs`)."""
        return self.start_run_once(image_digest, version_id, options, owner=owner)[0]

    def start_run_once(self, image_digest: str, version_id: int | None, options: dict[str, Any], *,
                       owner: str | None = None, actor: str | None = None, host: str | None = None,
                       idempotency_key: str | None = None) -> tuple[int, bool]:
        """Like :meth:`start_run`, for a client that may retry: a run already started with
        ``idempotency_key`` is returned as it is. (id, whether new)."""
        run = Run(image_digest=image_digest, version_id=version_id, started_at=utcnow(),
                  options=json.dumps(options, sort_keys=True), actor=actor or self.actor,
                  status=RunStatus.RUNNING.value, host=host or socket.gethostname(), owner=owner,
                  idempotency_key=idempotency_key)
        return self._add_once(run, Run, idempotency_key)

    def _add_once(self, row: Run | Attempt, kind: type[Run] | type[Attempt], key: str | None) -> tuple[int, bool]:
        """Insert ``row``; with an idempotency key already used, the existing row's id instead."""
        try:
            with self.session() as s:
                if isinstance(row, Run) and row.version_id is not None:
                    self._refuse_deleted(s, row.version_id)
                s.add(row)
                s.flush()
                return row.id, True
        except IntegrityError:
            if key is None:
                raise
            with self.session() as s:
                found = s.scalar(select(kind.id).where(kind.idempotency_key == key))
            if found is None:
                raise
            return found, False

    @staticmethod
    def _lock_version(s: Session, version_id: int) -> Version:
        """The version, locked for this transaction: a write to its row first (PostgreSQL: a row lock; SQLite:
        the database's write lock), so a run starting on it and retention deleting it take turns."""
        s.execute(update(Version).where(Version.id == version_id).values(state=Version.state)
                  .execution_options(synchronize_session=False))
        v = s.get(Version, version_id, options=[selectinload(Version.product)], populate_existing=True)
        if v is None:
            raise UnknownReferenceError(f"no version with id {version_id}")
        return v

    def _refuse_deleted(self, s: Session, version_id: int) -> None:
        v = self._lock_version(s, version_id)
        if v.state == State.DELETED.value:
            raise VersionDeleted(f"{v.product.name}@{v.serial} was deleted by retention: its bytes are gone (its "
                                 "record, events and results are kept)")

    def delete_version(self, version_id: int, *, actor: str | None = None, reason: str = "") -> list[str] | None:
        """Retention: an inactive, unpinned version with no run in progress becomes ``deleted`` and loses its
        artifacts (their blobs are garbage unless something else references them); the digests it
        referenced. None when it is not deletable now (its state, a pin or a run changed meanwhile)."""
        with self.session() as s:
            v = self._lock_version(s, version_id)
            if v.state != State.INACTIVE.value or v.pinned is not None:
                return None
            running = s.scalar(select(func.count(Run.id)).where(Run.version_id == version_id,
                                                                Run.status == RunStatus.RUNNING.value))
            if running:
                return None
            digests = [str(d) for d in s.scalars(select(Artifact.digest).where(Artifact.version_id == version_id))]
            s.execute(delete(Artifact).where(Artifact.version_id == version_id))
            v.state = State.DELETED.value
            s.add(Event(version_id=v.id, from_state=State.INACTIVE.value, to_state=State.DELETED.value,
                        actor=actor or self.actor, reason=reason, at=utcnow()))
            return digests

    def pin(self, version_id: int, reason: str | None, *, actor: str | None = None) -> Version:
        """Pin (``reason``) or unpin (None) a version: a pinned one is never pruned, retired by retention nor
        deleted. Audited as an event that keeps its state."""
        with self.session() as s:
            v = self._lock_version(s, version_id)
            if v.state == State.DELETED.value:
                raise VersionDeleted(f"{v.product.name}@{v.serial} was deleted by retention: nothing to pin")
            if (v.pinned is None) == (reason is None):
                raise UsageError(f"{v.product.name}@{v.serial} is " + ("not pinned" if reason is None else
                                                                        f"already pinned ({v.pinned})"))
            v.pinned = reason
            s.add(Event(version_id=v.id, from_state=v.state, to_state=v.state, actor=actor or self.actor,
                        reason=f"pinned: {reason}" if reason is not None else "unpinned", at=utcnow()))
            return v

    def old_logs(self, before: datetime, digests: Sequence[str], *, drop: bool) -> list[int]:
        """Retention of logs: the attempts on ``digests`` that ended before ``before`` and still have a log;
        with ``drop``, they lose it (the attempts stay). Their ids."""
        with self.session() as s:
            ids = [int(i) for i in s.scalars(select(Attempt.id).where(
                Attempt.ended_at < before, Attempt.log_digest.is_not(None), Attempt.image_digest.in_(list(digests))))]
            if drop and ids:
                for start in range(0, len(ids), 500):
                    s.execute(update(Attempt).where(Attempt.id.in_(ids[start:start + 500])).values(log_digest=None)
                              .execution_options(synchronize_session=False))
            return ids

    def old_attempts(self, before: datetime, digests: Sequence[str], *, remove: bool,
                     deleting: Sequence[int] = ()) -> list[int]:
        """Retention of results: attempts on ``digests`` that ended before ``before``, of bytes no version that is
        not deleted holds (``deleting``: versions counted as deleted already: a dry run's); with ``remove``, they
        go, with the ended runs they leave empty. Their ids."""
        with self.session() as s:
            alive = select(Version.digest).where(Version.state != State.DELETED.value,
                                                 Version.id.not_in(list(deleting)))
            ids = [int(i) for i in s.scalars(select(Attempt.id).where(
                Attempt.ended_at < before, Attempt.image_digest.in_(list(digests)),
                Attempt.image_digest.not_in(alive)))]
            if remove and ids:
                for start in range(0, len(ids), 500):
                    s.execute(delete(Attempt).where(Attempt.id.in_(ids[start:start + 500]))
                              .execution_options(synchronize_session=False))
                s.execute(delete(Run).where(Run.status != RunStatus.RUNNING.value, Run.image_digest.in_(list(digests)),
                                            Run.image_digest.not_in(alive),
                                            ~select(Attempt.id).where(Attempt.run_id == Run.id).exists())
                          .execution_options(synchronize_session=False))
            return ids

    def finish_run(self, run_id: int, exit_code: int, status: RunStatus = RunStatus.FINISHED) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            run.ended_at = utcnow()
            run.exit_code = exit_code
            run.status = status.value

    def abort_dead_runs(self, alive: Callable[[str], bool]) -> list[Run]:
        """Mark ``aborted`` the runs of this host still ``running`` whose owner process is gone
        (``alive(owner)`` is false). Their recorded attempts stay; the run ends at its last one.
        A run recorded without an owner (an engine used as a library) is never guessed dead."""
        host = socket.gethostname()
        with self.session() as s:
            dead = [s.get_one(Run, rid) for rid, owner in lookups.running(SqlAlchemyReader(s), host)
                    if owner and not alive(owner)]
            for run in dead:
                last = s.scalar(select(func.max(Attempt.ended_at)).where(Attempt.run_id == run.id))
                run.status = RunStatus.ABORTED.value
                run.ended_at = _aware(last) if last is not None else _aware(run.started_at)
            return dead

    def record_attempt(self, attempt: Attempt) -> Attempt:
        with self.session() as s:
            s.add(attempt)
            s.flush()
            return attempt

    def record_attempts_once(self, attempts: Sequence[Attempt]) -> list[tuple[int, bool]]:
        """Record ``attempts`` in one transaction, skipping those whose idempotency key is already
        recorded: (id, whether new) for each, in order. A concurrent batch with the same keys makes
        this one retry and find them."""
        keys = [a.idempotency_key for a in attempts if a.idempotency_key is not None]
        for attempt_no in range(3):
            try:
                with self.session() as s:
                    known: dict[str, int] = {}
                    for i in range(0, len(keys), 500):
                        known |= {str(k): int(v) for k, v in s.execute(
                            select(Attempt.idempotency_key, Attempt.id).where(
                                Attempt.idempotency_key.in_(keys[i:i + 500])))}
                    fresh = [a for a in attempts if a.idempotency_key not in known]
                    if fresh:  # one INSERT … RETURNING (the ORM's unit of work costs more than the insert)
                        ids = s.scalars(insert(Attempt).returning(Attempt.id, sort_by_parameter_order=True),
                                        [{c: getattr(a, c) for c in _ATTEMPT_COLUMNS} | {"reason": a.reason or ""}
                                         for a in fresh]).all()
                        for a, new_id in zip(fresh, ids, strict=True):
                            a.id = new_id
                    return [(known[a.idempotency_key], False) if a.idempotency_key in known else (a.id, True)
                            for a in attempts]
            except IntegrityError:
                if attempt_no == 2:
                    raise
                for a in attempts:  # detached by the rollback: insert them afresh next time
                    a.id = None  # type: ignore[assignment]
        raise AssertionError("unreachable")

    def record_attempt_once(self, attempt: Attempt) -> tuple[int, bool]:
        """Record ``attempt`` unless one with its idempotency key exists: (its id, whether new)."""
        return self._add_once(attempt, Attempt, attempt.idempotency_key)

    def attempt(self, attempt_id: int) -> Attempt | None:
        with self.session() as s:
            return s.get(Attempt, attempt_id)

    def passing_attempt(self, image_digest: str, test_id: str, test_digest: str, testbed: str) -> Attempt | None:
        """An earlier pass of exactly these bytes with exactly this test on this testbed."""
        with self.session() as s:
            return s.scalar(select(Attempt).where(
                Attempt.image_digest == image_digest, Attempt.test_id == test_id, Attempt.test_digest == test_digest,
                Attempt.testbed == testbed, Attempt.verdict == "pass").order_by(Attempt.id).limit(1))

    def attempts(self, image_digest: str, test_ids: Sequence[str] | None = None,
                 run_id: int | None = None) -> list[Attempt]:
        with self.session() as s:
            q = select(Attempt).where(Attempt.image_digest == image_digest)
            if test_ids:
                q = q.where(Attempt.test_id.in_(list(test_ids)))
            if run_id is not None:
                q = q.where(Attempt.run_id == run_id)
            return list(s.scalars(q.order_by(Attempt.id)))

    def first_seen(self, name: str, test_ids: Sequence[str]) -> dict[str, datetime]:
        """When each test first ran against any version of product ``name`` (absent: never)."""
        with self.session() as s:
            rows = s.execute(
                select(Attempt.test_id, func.min(Attempt.started_at))
                .join(Version, Version.digest == Attempt.image_digest)
                .join(Product, Product.id == Version.product_id)
                .where(Product.name == name, Attempt.test_id.in_(list(test_ids)))
                .group_by(Attempt.test_id))
            return {tid: _aware(when) for tid, when in rows}

    def runs(self, image_digest: str) -> list[Run]:
        with self.session() as s:
            return list(s.scalars(select(Run).where(Run.image_digest == image_digest).order_by(Run.id)))

    def run(self, run_id: int) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)


class SqlAlchemyReader(Reader):
    """A ``store.reading.Reader`` over SQLAlchemy: an engine (a connection per statement) or an open
    session (inside its transaction)."""

    def __init__(self, through: Engine | Session) -> None:
        self.through = through

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        if isinstance(self.through, Session):
            return [tuple(r) for r in self.through.execute(text(sql), dict(params or {}))]
        try:
            with self.through.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql), dict(params or {}))]
        except DatabaseError as exc:
            raise database.unusable(exc, str(self.through.url)) from exc

    def time(self, when: datetime) -> Any:
        bind = self.through.get_bind() if isinstance(self.through, Session) else self.through
        return when.astimezone(UTC).strftime(SQLITE_TIME) if bind.dialect.name == "sqlite" else when


def _aware(when: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is stored in UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
