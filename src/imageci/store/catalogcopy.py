"""A consistent copy of a catalog while other processes write to it — SQLite's online backup API, or
PostgreSQL's ``pg_dump`` (each: the database as of one transaction) — its restore (``pg_restore``), and
the blobs a SQLite catalog file references."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path

from sqlalchemy.engine import make_url

from imageci.errors import CatalogUnusableError, HostSetupError
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


def _libpq(db_url: str) -> tuple[str, dict[str, str]]:
    """A PostgreSQL catalog URL as libpq's tools take it (no driver; the password in the environment,
    never in a command line)."""
    url = make_url(db_url)
    env = {**os.environ, "PGPASSWORD": url.password} if url.password else dict(os.environ)
    plain = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return plain, env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise HostSetupError(f"{name} is not installed (apt-get install postgresql-client): it copies a "
                             "PostgreSQL catalog")
    return found


def pg_dump(db_url: str, dest: Path) -> None:
    """``pg_dump --format=custom`` of the catalog into ``dest``: one transaction's snapshot, writers go on."""
    url, env = _libpq(db_url)
    done = subprocess.run([_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(dest), url],
                          capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        dest.unlink(missing_ok=True)
        raise CatalogUnusableError(f"pg_dump failed: {done.stderr.strip()[-500:]}")


def pg_restore(source: Path, db_url: str) -> None:
    """``pg_restore`` of a dump into the (empty) catalog database ``db_url``, in one transaction."""
    url, env = _libpq(db_url)
    done = subprocess.run([_tool("pg_restore"), "--no-owner", "--single-transaction", "--exit-on-error",
                           "--dbname", url, str(source)], capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise CatalogUnusableError(f"pg_restore failed (nothing was restored): {done.stderr.strip()[-500:]}")


def pg_tables(db_url: str) -> list[str]:
    """The tables of the PostgreSQL database ``db_url`` (a restore goes into one that has none)."""
    from sqlalchemy import inspect

    from imageci.store.database import make_engine

    engine = make_engine(db_url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()
