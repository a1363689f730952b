"""A consistent copy of a SQLite catalog while other processes write to it (SQLite's online backup API:
the copy is the database as of one transaction), and the blobs a catalog file references."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from imageci.errors import CatalogUnusableError
from imageci.store.accesslookups import referenced_blobs
from imageci.store.reading import SqliteReader

PAGES_PER_STEP = 1024  # copied per step: writers wait at most one step's time


def snapshot(source: Path, dest: Path) -> None:
    """Copy the SQLite catalog ``source`` to ``dest`` (a new file), consistent as of one transaction."""
    uri = f"file:{urllib.parse.quote(str(source))}?mode=rw"  # not ro: see reading.SqliteReader.open
    try:
        src = sqlite3.connect(uri, uri=True, timeout=30)
        src.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise CatalogUnusableError(f"{source}: cannot open the catalog to copy it: {exc}") from None
    try:
        with sqlite3.connect(dest) as out:
            src.backup(out, pages=PAGES_PER_STEP)
        out.close()
    except sqlite3.DatabaseError as exc:
        dest.unlink(missing_ok=True)
        raise CatalogUnusableError(f"{source}: the catalog could not be copied: {exc}") from None
    finally:
        src.close()


def blobs_of(catalog_file: Path) -> set[str]:
    """Every blob digest the SQLite catalog file references (artifacts, logs, consumers' snapshots)."""
    reader = SqliteReader.open(f"sqlite:///{catalog_file}")
    if reader is None:
        raise CatalogUnusableError(f"{catalog_file}: not a SQLite catalog")
    try:
        return referenced_blobs(reader)
    finally:
        reader.close()
