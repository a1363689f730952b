"""`imageci backup DEST` and `imageci restore SRC`: a home's catalog and the blobs it references, copied
while the server keeps running, and put back into an empty home.

A backup is a new directory:

- ``backup.json``: what it is (format, when, the catalog's schema revision, the blobs' count and bytes);
- ``catalog.db``: the SQLite catalog as of one transaction (SQLite's online backup: writers go on), or
  ``catalog.pgdump``: a PostgreSQL catalog's ``pg_dump --format=custom`` (a snapshot too);
- ``blobs.txt``: every blob the copied catalog references (artifacts, logs, consumers' snapshots),
  ``DIGEST SIZE`` per line;
- ``blobs/sha256/XX/DIGEST``: those blobs, each hashed while it is copied.

A blob the catalog references that the store lacks (or whose bytes do not match its digest) is named in
the report and the backup's ``backup.json`` — never a traceback; the command then exits 7."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from pydantic import BaseModel

from imageci import __version__
from imageci.app.session import Session
from imageci.errors import UsageError
from imageci.store.accesslookups import referenced_blobs
from imageci.store.blobs import CHUNK, BlobMismatchError, BlobStore
from imageci.store.catalogcopy import blobs_of, pg_dump, pg_restore, pg_tables, snapshot
from imageci.store.catalogfile import HEAD
from imageci.store.database import sqlite_file
from imageci.store.reading import SqliteReader
from imageci.store.states import utcnow

FORMAT = 1
MANIFEST, CATALOG, PGDUMP, LISTING = "backup.json", "catalog.db", "catalog.pgdump", "blobs.txt"


class BackupReport(BaseModel):
    path: str
    catalog: str  # sqlite | postgresql
    revision: str  # the catalog's schema revision
    blobs: int  # copied
    bytes: int
    missing: list[str]  # referenced, not in the store
    corrupt: list[str]  # in the store, bytes not matching their digest: not copied

    @property
    def complete(self) -> bool:
        return not (self.missing or self.corrupt)


class RestoreReport(BaseModel):
    source: str
    revision: str  # the backup's catalog revision (migrated to this imageci's on restore)
    versions: int
    blobs: int  # put into the store
    missing: list[str]  # referenced by the restored catalog, in neither the backup nor the store
    corrupt: list[str]  # in the backup, bytes not matching their digest: not restored

    @property
    def complete(self) -> bool:
        return not (self.missing or self.corrupt)


def backup(session: Session, dest: Path) -> BackupReport:
    """Copy the catalog (consistent, while others write) and every blob it references into ``dest``."""
    session.catalog  # noqa: B018 (opened: created or migrated first, so the copy is of this imageci's schema)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest}: a backup goes into a new (or empty) directory")
    dest.mkdir(parents=True, exist_ok=True)
    source = sqlite_file(session.settings.db_url)
    if source is not None:
        snapshot(source, dest / CATALOG)
        digests = blobs_of(dest / CATALOG)
    else:  # the blobs referenced after the dump: every one it references (bar what retention removed since)
        pg_dump(session.settings.db_url, dest / PGDUMP)
        digests = referenced_blobs(session.reader)
    report = BackupReport(path=str(dest), catalog="sqlite" if source else "postgresql", revision=HEAD, blobs=0,
                          bytes=0, missing=[], corrupt=[])
    listing = []
    for digest in sorted(digests):
        src = session.store.path(digest)
        if not src.is_file():
            report.missing.append(digest)
            continue
        size = _copy_checked(src, dest / "blobs" / "sha256" / digest[:2] / digest, digest)
        if size is None:
            report.corrupt.append(digest)
            continue
        listing.append(f"{digest} {size}\n")
        report.blobs, report.bytes = report.blobs + 1, report.bytes + size
    (dest / LISTING).write_text("".join(listing))
    manifest = {"format": FORMAT, "imageci": __version__, "created": utcnow().isoformat(), **report.model_dump()}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def _copy_checked(src: Path, dest: Path, digest: str) -> int | None:
    """Copy ``src`` to ``dest`` while hashing it: its size, or None (nothing left) when its bytes are not
    ``digest``'s."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    h, size = hashlib.sha256(), 0
    with src.open("rb") as fin, dest.open("wb") as fout:
        while chunk := fin.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            fout.write(chunk)
    if h.hexdigest() != digest:
        dest.unlink()
        return None
    return size


def restore(session: Session, source: Path) -> RestoreReport:
    """Put the backup ``source`` into this home, whose catalog must be empty: the catalog (migrated to this
    imageci's schema), then every blob it lists (each checked against its digest)."""
    manifest = _manifest(source)
    target = sqlite_file(session.settings.db_url)
    kind = "sqlite" if target is not None else "postgresql"
    if manifest.get("catalog", "sqlite") != kind:
        raise UsageError(f"{source} is a backup of a {manifest.get('catalog')} catalog; this home's is {kind}: "
                         "restore it into a home with the same kind of catalog")
    if target is not None:
        _refuse_a_catalog_in_use(target)
        tmp = target.with_name(f".{target.name}.restoring")
        shutil.copyfile(source / CATALOG, tmp)
        for stale in (target, target.with_name(f"{target.name}-wal"), target.with_name(f"{target.name}-shm")):
            stale.unlink(missing_ok=True)
        os.replace(tmp, target)
    else:
        tables = pg_tables(session.settings.db_url)
        if tables:
            raise UsageError(f"the database has {len(tables)} table(s): restore into an empty database "
                             "(createdb NAME); nothing was changed")
        pg_restore(source / PGDUMP, session.settings.db_url)
    catalog = session.catalog  # opened: migrated from the backup's revision when it is older
    report = RestoreReport(source=str(source), revision=str(manifest.get("revision", "?")), versions=0, blobs=0,
                           missing=[], corrupt=[])
    report.versions = sum(len(catalog.versions(name)) for name in catalog.products())
    for digest in sorted(referenced_blobs(session.reader)):
        if session.store.has(digest):
            continue
        found = source / "blobs" / "sha256" / digest[:2] / digest
        if not found.is_file():
            report.missing.append(digest)
        elif _restore_blob(session.store, found, digest):
            report.blobs += 1
        else:
            report.corrupt.append(digest)
    return report


def _manifest(source: Path) -> dict[str, object]:
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{source}: not an imageci backup ({MANIFEST}: {exc})") from None
    dump = PGDUMP if isinstance(manifest, dict) and manifest.get("catalog") == "postgresql" else CATALOG
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not (source / dump).is_file():
        raise UsageError(f"{source}: not an imageci backup of format {FORMAT} (no {dump}, or another format)")
    return manifest


def _refuse_a_catalog_in_use(target: Path) -> None:
    """A restore goes into an empty home: a catalog with any product is never overwritten."""
    reader = SqliteReader.open(f"sqlite:///{target}") if target.exists() else None
    if target.exists() and reader is None:
        raise UsageError(f"{target} exists and is not an empty catalog of this imageci: restore into an empty "
                         "home (a new IMAGECI_HOME)")
    if reader is not None:
        try:
            products = reader.rows("SELECT COUNT(*) FROM products", {})[0][0]
        finally:
            reader.close()
        if products:
            raise UsageError(f"{target} holds {products} product(s): restore into an empty home (a new "
                             "IMAGECI_HOME); nothing was changed")


def _restore_blob(store: BlobStore, path: Path, digest: str) -> bool:
    """Write the backup's blob into the store, checked against its digest (False: it does not match)."""
    writer = store.writer(digest, path.stat().st_size)
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                writer.write(chunk)
        writer.commit()
    except BlobMismatchError:
        return False
    return True
