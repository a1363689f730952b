"""The catalog: products, versions, channels, audited state transitions, runs
and test attempts. One class over SQLAlchemy sessions; callers get ORM objects
detached from their session (``expire_on_commit=False``)."""

from __future__ import annotations

import difflib
import getpass
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from imageci.errors import UnknownReferenceError, UsageError
from imageci.store import database
from imageci.store.models import (
    CHANNELS,
    TRANSITIONS,
    Artifact,
    Attempt,
    Event,
    Product,
    Run,
    RunStatus,
    State,
    Version,
    utcnow,
)
from imageci.store.refs import ImageRef, parse_ref


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


@dataclass(frozen=True)
class TransientFailure:
    product: str
    serial: str
    run_id: int
    test_id: str
    testbed: str
    attempts: tuple[tuple[int, str], ...]  # (attempt number, verdict), in order

    @property
    def failed_attempts(self) -> list[int]:
        return [n for n, v in self.attempts if v in ("fail", "error")]


class TransitionError(UsageError):
    pass


class Catalog:
    def __init__(self, engine: Engine, url: str = "", actor: str | None = None) -> None:
        self.engine = engine
        self.url = url or str(engine.url)
        self.actor = actor or current_actor()  # who audit events and runs name, unless a call says
        self._sessions = sessionmaker(engine, expire_on_commit=False)

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
        try:
            with self._sessions() as s, s.begin():
                yield s
        except IntegrityError:
            raise  # a constraint, not damage (callers retry on it)
        except DatabaseError as exc:
            raise database.unusable(exc, self.url) from exc

    # ---- products and versions -------------------------------------------------

    def _product(self, s: Session, name: str, create: bool = False) -> Product | None:
        product = s.scalar(select(Product).where(Product.name == name))
        if product is None and create:
            product = Product(name=name, created_at=utcnow())
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
                         publish_to_testing: bool = True) -> Version:
        """Record a complete version and (by default) publish it to ``testing``,
        all in one transaction: a version is never visible half-registered."""
        actor = actor or self.actor
        for attempt in range(5):
            try:
                with self.session() as s:
                    product = self._product(s, name, create=True)
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

    def set_test_config(self, version_id: int, definition: str, artifacts: Sequence[NewArtifact], *,
                        drop: set[str] | None = None) -> Version:
        """Record the version's current test configuration: the definition text (its ``tests`` and
        ``keep``, which are not build inputs, may have changed) and artifacts that replace those of the
        same kind (the suite snapshot); ``drop`` removes artifacts of those kinds. The image bytes are
        untouched; evidence is keyed by test digest."""
        with self.session() as s:
            v = s.get(Version, version_id, options=[selectinload(Version.product), selectinload(Version.artifacts)])
            if v is None:
                raise UnknownReferenceError(f"no version with id {version_id}")
            v.definition = definition
            kinds = {a.kind for a in artifacts} | (drop or set())
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

    def find_by_input_hash(self, name: str, input_hash: str) -> Version | None:
        with self.session() as s:
            return s.scalar(
                select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
                .where(Product.name == name, Version.input_hash == input_hash,
                       Version.state != State.INACTIVE.value)
                .order_by(Version.serial.desc()).limit(1))

    def find_by_digest(self, name: str, digest: str) -> Version | None:
        with self.session() as s:
            return s.scalar(
                select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
                .where(Product.name == name, Version.digest == digest)
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

    def events(self, version_id: int) -> list[Event]:
        with self.session() as s:
            return list(s.scalars(select(Event).where(Event.version_id == version_id).order_by(Event.id)))

    def resolve(self, ref: str | ImageRef) -> Version:
        """The version a reference names; unknown names list the close ones."""
        r = parse_ref(ref) if isinstance(ref, str) else ref
        with self.session() as s:
            q = select(Version).join(Product).options(selectinload(Version.product),
                                                      selectinload(Version.artifacts))
            if r.digest:
                found = list(s.scalars(q.where(Version.digest.like(f"{r.digest}%")).order_by(Version.serial)))
                digests = {v.digest for v in found}
                if len(digests) > 1:
                    raise UnknownReferenceError(f"ambiguous digest prefix {r.digest!r}")
                if found:
                    return found[-1]
                raise UnknownReferenceError(f"no image with digest sha256:{r.digest}")
            assert r.name is not None
            if self._product(s, r.name) is None:
                names = list(s.scalars(select(Product.name)))
                close = difflib.get_close_matches(r.name, names, n=3, cutoff=0.4)
                hint = f"; did you mean: {', '.join(close)}" if close else (
                    f"; known images: {', '.join(sorted(names))}" if names else "; the catalog is empty")
                raise UnknownReferenceError(f"unknown image {r.name!r}{hint}")
            q = q.where(Product.name == r.name)
            if r.serial:
                v = s.scalar(q.where(Version.serial == r.serial))
                if v is None:
                    serials = list(s.scalars(select(Version.serial).join(Product)
                                             .where(Product.name == r.name).order_by(Version.serial)))
                    raise UnknownReferenceError(f"{r.name} has no version {r.serial!r}; versions: "
                                                f"{', '.join(serials[-5:]) or 'none'}")
                return v
            channel = r.channel or "testing"
            if channel not in CHANNELS:
                raise UnknownReferenceError(f"unknown channel {channel!r}; channels: {', '.join(CHANNELS)}")
            v = s.scalar(q.where(Version.state.in_([st.value for st in CHANNELS[channel]]))
                         .order_by(Version.serial.desc()).limit(1))
            if v is None:
                raise UnknownReferenceError(f"{r.name} has no version on channel {channel!r}")
            return v

    # ---- runs and attempts -----------------------------------------------------

    def start_run(self, image_digest: str, version_id: int | None, options: dict[str, Any], *,
                  owner: str | None = None) -> int:
        """A run in progress; ``owner`` is the lock file its process holds (imageci.owners), so a
        later imageci on this host can tell a run whose process died (see :meth:`abort_dead_runs`)."""
        with self.session() as s:
            run = Run(image_digest=image_digest, version_id=version_id, started_at=utcnow(),
                      options=json.dumps(options, sort_keys=True), actor=self.actor,
                      status=RunStatus.RUNNING.value, host=socket.gethostname(), owner=owner)
            s.add(run)
            s.flush()
            return run.id

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
            candidates = list(s.scalars(select(Run).where(Run.status == RunStatus.RUNNING.value,
                                                          Run.host == host)))
            dead = [r for r in candidates if r.owner and not alive(r.owner)]
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

    def transient_failures(self, name: str | None, since: datetime) -> list[TransientFailure]:
        """Every run × test × testbed (with its product, serial and attempts in order) that failed or
        errored and then passed within one run since ``since``. The database does the finding: it starts
        from passes with attempt > 1 (index ``ix_attempts_retried``) and reads each group by
        ``ix_attempts_group``, so memory and time follow the
        number of transient failures, not the size of the catalog."""
        with self.session() as s:
            passed_late = (select(Attempt.run_id, Attempt.test_id, Attempt.testbed)
                           .where(Attempt.verdict == "pass", Attempt.attempt > 1, Attempt.started_at >= since)
                           .distinct().subquery())
            failed = (select(Attempt.run_id, Attempt.test_id, Attempt.testbed)
                      .join(passed_late, (Attempt.run_id == passed_late.c.run_id)
                            & (Attempt.test_id == passed_late.c.test_id)
                            & (Attempt.testbed == passed_late.c.testbed))
                      .where(Attempt.verdict.in_(("fail", "error"))).distinct().subquery())
            q = (select(Product.name, Version.serial, Attempt.run_id, Attempt.test_id, Attempt.testbed,
                        Attempt.attempt, Attempt.verdict)  # columns, not ORM objects: cheap per row
                 .join(failed, (Attempt.run_id == failed.c.run_id) & (Attempt.test_id == failed.c.test_id)
                       & (Attempt.testbed == failed.c.testbed))
                 .join(Version, Version.digest == Attempt.image_digest)
                 .join(Product, Product.id == Version.product_id))
            if name is not None:
                q = q.where(Product.name == name)
            groups: dict[tuple[str, str, int, str, str], list[tuple[int, str]]] = {}
            for product, serial, run_id, test_id, testbed, number, verdict in s.execute(q.order_by(Attempt.id)):
                groups.setdefault((product, serial, run_id, test_id, testbed), []).append((number, verdict))
            return [TransientFailure(*key, tuple(attempts)) for key, attempts in groups.items()]

    def runs(self, image_digest: str) -> list[Run]:
        with self.session() as s:
            return list(s.scalars(select(Run).where(Run.image_digest == image_digest).order_by(Run.id)))

    def run(self, run_id: int) -> Run | None:
        with self.session() as s:
            return s.get(Run, run_id)


def _aware(when: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is stored in UTC."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
