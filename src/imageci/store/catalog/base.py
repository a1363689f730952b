"""What every part of the catalog shares: the engine, its sessions (one transaction each), a product's row,
a version locked for a transaction; the values and errors the catalog's calls take and raise."""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from imageci.errors import ImageciError, UnknownReferenceError, UsageError
from imageci.store import database
from imageci.store.models import DEFAULT_NAMESPACE, Product, State, Version, utcnow
from imageci.store.reading import SQLITE_TIME, Reader, Row


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
                    "ended_at", "exit_code", "verdict", "reason", "log_digest", "idempotency_key", "worker", "known")



class CatalogBase:
    def __init__(self, engine: Engine, url: str = "", actor: str | None = None) -> None:
        self.engine = engine
        self.url = url or str(engine.url)
        self.actor = actor or current_actor()  # who audit events and runs name, unless a call says
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._turns: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext())

    @classmethod
    def open(cls, url: str, actor: str | None = None) -> Self:
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

    def _product(self, s: Session, name: str, create: bool = False,
                 namespace: str = DEFAULT_NAMESPACE) -> Product | None:
        product = s.scalar(select(Product).where(Product.name == name))
        if product is None and create:
            product = Product(name=name, created_at=utcnow(), namespace=namespace, public=False)
            s.add(product)
            s.flush()
        return product

    def reader(self) -> Reader:
        """Plain-SQL read access for ``store.lookups``, a connection per statement."""
        return SqlAlchemyReader(self.engine)

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
