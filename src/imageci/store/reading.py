"""Read access to the catalog as plain SQL, for the lookups in ``store.lookups``.

A ``Reader`` runs one portable statement (named ``:params``) and hands back rows
as tuples. Two implementations run the same statements:

- ``SqliteReader``: the standard library's sqlite3 (``query_only``: it never
  writes), on an existing, up-to-date SQLite catalog. It never imports SQLAlchemy, so the query
  commands (``images``, ``results``, ``events``, ``flaky``, ``gate``) start in a fraction
  of the time the ORM's import takes.
- ``store.catalog.SqlAlchemyReader`` (store/catalog/base.py): any database SQLAlchemy reaches
  (PostgreSQL), through the catalog's engine.

``SqliteReader.open`` answers None (the caller opens the full catalog, which
creates, migrates or refuses) for anything but a plain, current SQLite file.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imageci.errors import CatalogUnusableError
from imageci.store.catalogfile import HEAD, check_path, not_sqlite, restore_hint

Row = tuple[Any, ...]
# How SQLAlchemy stores a DateTime in SQLite (UTC, no zone): comparisons there are between strings.
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


class Reader(ABC):
    @abstractmethod
    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Every row of ``sql`` (a SELECT with ``:name`` parameters)."""

    def time(self, when: datetime) -> Any:
        """``when`` as a parameter compared with a stored timestamp."""
        return when

    def close(self) -> None:
        return None


def stamp(value: Any) -> datetime:
    """A stored timestamp as an aware UTC datetime, whichever driver read it."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///PATH`` URL; None for anything else (other databases, memory, options)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            rest = url.removeprefix(prefix)
            return Path(rest) if rest and rest != ":memory:" and "?" not in rest else None
    return None


class SqliteReader(Reader):
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, url: str) -> SqliteReader | None:
        """A read-only reader on the SQLite catalog at ``url`` if it exists and its schema is this
        imageci's; None otherwise. A file that cannot be a catalog is refused (CatalogUnusableError)."""
        path = sqlite_path(url)
        if path is None or not path.exists():
            return None
        check_path(path, header=False)  # never open the file outside SQLite: see check_path
        try:
            # Not mode=ro: a read-only connection to a WAL database fails ("disk I/O error") when a
            # writer's checkpoint removes the -wal/-shm files it cannot recreate. query_only makes
            # this connection refuse every write instead. A server's request may open it in one
            # worker thread and read in another: one at a time.
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            return None  # the full path says why
        reader = cls(conn, path)
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                reader.close()
                raise not_sqlite(path) from None
            revision = []  # no schema yet, or not ours: the full path creates or refuses
        if revision != [(HEAD,)]:
            reader.close()
            return None
        return reader

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        try:
            return self.conn.execute(sql, dict(params or {})).fetchall()
        except sqlite3.DatabaseError as exc:
            raise CatalogUnusableError(f"the catalog {self.path} is damaged ({exc}). "
                                       f"{restore_hint(self.path)}") from exc

    def time(self, when: datetime) -> Any:
        return when.astimezone(UTC).strftime(SQLITE_TIME)

    def close(self) -> None:
        self.conn.close()


class ReaderPool:
    """SQLite readers kept open for reuse by a long-lived process (a server's requests): opening one
    costs more than most queries. ``take`` one (None: the catalog is not a SQLite file at this
    imageci's schema), ``give`` it back when done."""

    KEEP = 32

    def __init__(self, url: str) -> None:
        self.url = url
        self.free: list[SqliteReader] = []
        self.lock = threading.Lock()
        self.local = sqlite_path(url) is not None  # a file on this machine: a query is a short read


    def take(self) -> SqliteReader | None:
        with self.lock:
            if self.free:
                return self.free.pop()
        return SqliteReader.open(self.url)

    def give(self, reader: SqliteReader) -> None:
        with self.lock:
            if len(self.free) < self.KEEP:
                self.free.append(reader)
                return
        reader.close()

    def close(self) -> None:
        with self.lock:
            readers, self.free = self.free, []
        for reader in readers:
            reader.close()
