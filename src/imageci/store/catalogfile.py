"""What the catalog file must be before anything reads it, without SQLAlchemy:
the schema revision this imageci writes, a SQLite file's header, and the
advice a damaged file gets. Both the ORM (``store.database``) and the fast read
path (``store.reading``) refuse the same files with the same words."""

from __future__ import annotations

from pathlib import Path

from imageci.errors import CatalogUnusableError, UsageError

# The newest schema revision (migrations/versions/); a test keeps it equal to Alembic's head.
# Opening an up-to-date catalog compares with it and never imports Alembic.
HEAD = "0021"
SQLITE_HEADER = b"SQLite format 3\x00"


def restore_hint(path: Path | None) -> str:
    if path is None:
        return "Nothing was changed. Restore the database from a backup; the artifact store is untouched."
    return (f"Nothing was changed. Restore {path} from a backup, or move it aside (mv {path} {path}.damaged) "
            f"to start an empty catalog; `sqlite3 {path}.damaged .recover | sqlite3 {path}` salvages what is "
            "readable. The artifact store is untouched.")


def not_sqlite(path: Path) -> CatalogUnusableError:
    return CatalogUnusableError(f"the catalog {path} is not a SQLite database (damaged or overwritten). "
                                f"{restore_hint(path)}")


def check_path(path: Path, *, header: bool = True) -> None:
    """Refuse an existing file that cannot be a SQLite catalog (SQLite would silently
    turn a zero-byte file into a new, empty database).

    ``header=False`` judges from ``stat`` alone and leaves the header to SQLite: in a process
    that has the database open, opening and closing the file through another descriptor would
    drop every POSIX lock SQLite holds on it (a server's requests)."""
    if not path.exists():
        if not path.parent.is_dir():  # SQLite would call the catalog damaged: it is the setting that is wrong
            raise UsageError(f"IMAGECI_DB_URL: the catalog's directory {path.parent} is not a directory "
                             "(make it, or point IMAGECI_DB_URL elsewhere)")
        return
    if not path.is_file():
        raise CatalogUnusableError(f"the catalog {path} is not a regular file. {restore_hint(path)}")
    if path.stat().st_size == 0:
        raise CatalogUnusableError(f"the catalog {path} is empty (0 bytes): its history is gone or it was "
                                   f"truncated; it is never replaced by a new catalog. {restore_hint(path)}")
    if header:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise not_sqlite(path)
