"""What every operation works on: settings, the catalog, the artifact store and
this process's owner token."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imageci.config import Settings
from imageci.homelock import HomeLock
from imageci.owners import Owner, lock_alive, process_owner
from imageci.store import lookups
from imageci.store.blobs import BlobStore, open_store
from imageci.store.reading import Reader, ReaderPool, SqliteReader

if TYPE_CHECKING:  # the ORM is imported when the catalog is first used: queries never need it
    from imageci.store.catalog import Catalog

log = logging.getLogger("imageci.app")


@dataclass
class Session:
    settings: Settings
    _catalog: Catalog | None = field(default=None)
    _store: BlobStore | None = field(default=None)
    _lock: HomeLock | None = field(default=None)
    _reader: Reader | None = field(default=None)
    _borrowed: bool = field(default=False)  # catalog and store belong to a long-lived process (a server)
    _readers: ReaderPool | None = field(default=None)  # the long-lived process's open readers

    @classmethod
    def borrow(cls, settings: Settings, catalog: Catalog, store: BlobStore,
               readers: ReaderPool | None = None) -> Session:
        """A short session (a server's request) on a catalog and store the caller opened once and
        keeps: closing it leaves them open, and gives its reader back to ``readers``. The caller opened
        the catalog (dead runs were marked then), so reading needs no check of its own. The home lock
        is the caller's."""
        return cls(settings, _catalog=catalog, _store=store, _borrowed=True, _readers=readers)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Session:
        """A session on the home of ``settings`` (default: from the environment). It holds the
        home's shared lock, so ``imageci gc`` never removes what this process uses."""
        settings = settings or Settings.load()
        settings.ensure()
        session = cls(settings)
        session.lock.shared()
        return session

    @property
    def lock(self) -> HomeLock:
        if self._lock is None:
            self._lock = HomeLock(self.settings.home)
        return self._lock

    @property
    def owner(self) -> Owner:
        """This process's owner token (its resources and runs carry it)."""
        return process_owner(self.settings.tmp_dir)

    @property
    def catalog(self) -> Catalog:
        """The catalog, opened on first use; runs whose process died are marked aborted then."""
        if self._catalog is None:
            from imageci.store.catalog import Catalog

            self._catalog = Catalog.open(self.settings.db_url, self.settings.actor)
            for run in self._catalog.abort_dead_runs(lambda owner: lock_alive(Path(owner))):
                n = len(self._catalog.attempts(run.image_digest, run_id=run.id))
                log.warning("run %s was aborted: the imageci process running it died (killed or crashed); "
                            "its %s recorded attempt(s) are kept", run.id, n)
        return self._catalog

    @property
    def reader(self) -> Reader:
        """Plain-SQL read access (``store.lookups``) for the query operations. On an up-to-date SQLite
        catalog with no run left to mark aborted, that is stdlib sqlite3, read-only, and SQLAlchemy is
        never imported; otherwise the catalog is opened first (it creates, migrates or refuses, and marks
        dead runs aborted) and read through."""
        if self._reader is not None:
            return self._reader
        if self._borrowed:
            assert self._catalog is not None
            pooled = self._readers.take() if self._readers is not None else SqliteReader.open(self.settings.db_url)
            self._reader = pooled or self._catalog.reader()
            return self._reader
        reader: Reader | None = SqliteReader.open(self.settings.db_url)
        if reader is not None and any(owner and not lock_alive(Path(owner))
                                      for _id, owner in lookups.running(reader, socket.gethostname())):
            reader.close()
            reader = None
        if reader is None:
            catalog = self.catalog
            reader = SqliteReader.open(self.settings.db_url) or catalog.reader()
        self._reader = reader
        return reader

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = open_store(self.settings, self.owner.token)
        return self._store

    def close(self) -> None:
        if self._reader is not None:
            if self._readers is not None and isinstance(self._reader, SqliteReader):
                self._readers.give(self._reader)
            else:
                self._reader.close()
            self._reader = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if self._catalog is not None and not self._borrowed:
            self._catalog.close()
            self._catalog = None
