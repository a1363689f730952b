"""What is in a version and what changed between two: the operations behind ``imageci bom``,
``imageci diff``, their API routes and the dashboard's version page.

A version's BOM and file index are read from its root file system once (at build or import, or on
first request for a version made before) and stored with it as artifacts: the same bytes always
give the same answer, and a later request reads a small JSON file instead of the image."""

from __future__ import annotations

import gzip
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from imageci.app import access
from imageci.app.access import LOCAL, Principal
from imageci.app.operations import RefArgs, operation
from imageci.app.session import Session, log
from imageci.errors import ImageciError, UsageError
from imageci.formats.rootfs import unpacked_rootfs
from imageci.store import lookups
from imageci.store.blobs import BlobStore
from imageci.store.lookups import VersionInfo
from imageci.store.states import BOM, FILE_INDEX, ROOTFS, as_utc
from imageci.supply.diff import Changes, changes
from imageci.supply.extract import extract_bom
from imageci.supply.files import FileIndex, index_files
from imageci.supply.forms import BomFormat
from imageci.supply.packages import Bom
from imageci.supply.records import DamagedDatabase
from imageci.supply.subject import Subject

if TYPE_CHECKING:
    from imageci.store.catalog import NewArtifact

FILENAMES = {BOM: "bom.json", FILE_INDEX: "files.json.gz"}


class NoRootFs(UsageError):
    """A version whose bytes are not a root file system (nothing to read packages from)."""


def inventory(tree: Path, store: BlobStore) -> list[NewArtifact]:
    """The BOM and file index of an unpacked root file system, stored: the artifacts to register
    with its version (``build`` and ``import`` call this while the tree is unpacked)."""
    from imageci.store.catalog import NewArtifact  # (the ORM: a gate reading changes never imports it)

    bom = store.put_bytes(extract_bom(tree).model_dump_json().encode())
    files = store.put_bytes(gzip.compress(index_files(tree).model_dump_json().encode(), mtime=0))
    return [NewArtifact(BOM, FILENAMES[BOM], bom.digest, bom.size),
            NewArtifact(FILE_INDEX, FILENAMES[FILE_INDEX], files.digest, files.size)]


def digests(session: Session, version: VersionInfo) -> dict[str, str]:
    """kind → digest of the version's artifacts."""
    return {a.kind: a.digest for a in lookups.artifacts(session.reader, version.id)}


def tree(session: Session, version: VersionInfo, purpose: str) -> Path:
    """The version's root file system, unpacked (checked against its blob; cached per digest)."""
    rootfs = digests(session, version).get(ROOTFS)
    if rootfs is None:
        raise NoRootFs(f"{version.label} has no root file system to {purpose}")
    return unpacked_rootfs(session.store.verified_path(rootfs), rootfs, session.settings.rootfs_cache)


def _stored(session: Session, version: VersionInfo) -> dict[str, str]:
    """kind → digest of the version's artifacts; its BOM and file index are made now if missing."""
    have = digests(session, version)
    if BOM in have and FILE_INDEX in have:
        return have
    made = inventory(tree(session, version, "read packages from"), session.store)
    session.catalog.attach(version.id, made)
    return have | {a.kind: a.digest for a in made}


def _load(session: Session, digest: str, kind: str) -> Any:
    data = session.store.read_bytes(digest)
    return json.loads(gzip.decompress(data) if kind == FILE_INDEX else data)


def _bom(session: Session, version: VersionInfo) -> Bom:
    try:
        return Bom.model_validate(_load(session, _stored(session, version)[BOM], BOM))
    except ValidationError as exc:
        raise UsageError(f"{version.label}: its stored BOM is not one this imageci reads ({exc.errors()[0]['msg']})") \
            from None


def _files(session: Session, version: VersionInfo) -> FileIndex:
    return FileIndex.model_validate(_load(session, _stored(session, version)[FILE_INDEX], FILE_INDEX))


def bom_of(session: Session, version: VersionInfo) -> Bom:
    """The version's BOM (made now if it has none yet)."""
    return _bom(session, version)


def files_of(session: Session, version: VersionInfo) -> FileIndex:
    """The version's file index (made now if it has none yet)."""
    return _files(session, version)


def subject(version: VersionInfo) -> Subject:
    return Subject(name=version.name, serial=version.serial, digest=version.digest,
                   architecture=version.architecture, created=as_utc(version.created_at))


def bom(session: Session, ref: str, *, viewer: Principal = LOCAL) -> tuple[Subject, Bom]:
    """The packages installed in the version ``ref`` names."""
    version = access.resolve(session.reader, viewer, ref)
    return subject(version), _bom(session, version)


def bom_document(session: Session, ref: str, form: BomFormat, *, viewer: Principal = LOCAL) -> dict[str, Any]:
    """The version's BOM as JSON in one of the forms: ours, SPDX 2.3 or CycloneDX 1.6."""
    who, found = bom(session, ref, viewer=viewer)
    if form == BomFormat.SPDX:
        from imageci.supply.spdx import spdx_json  # spdx-tools: loaded when asked for

        return spdx_json(found, who)
    if form == BomFormat.CYCLONEDX:
        from imageci.supply.cyclonedx import cyclonedx_json

        return cyclonedx_json(found, who)
    return {"image": who.label, "digest": f"sha256:{who.digest}", "architecture": who.architecture,
            **found.model_dump(mode="json")}


class VersionDiff(Changes):
    before: str  # NAME@SERIAL
    after: str
    before_digest: str
    after_digest: str


def diff(session: Session, before: str, after: str, *, viewer: Principal = LOCAL) -> VersionDiff:
    """What changed from version ``before`` to version ``after`` (any two versions the viewer may
    read, of one product or two)."""
    a = access.resolve(session.reader, viewer, before)
    b = access.resolve(session.reader, viewer, after)
    return _diff(session, a, b)


_CHANGES: OrderedDict[tuple[str, ...], Changes] = OrderedDict()  # by the four artifacts' digests
_CHANGES_KEPT = 32
_changes_lock = threading.Lock()


def _diff(session: Session, a: VersionInfo, b: VersionInfo) -> VersionDiff:
    have_a, have_b = _stored(session, a), _stored(session, b)
    key = (str(session.store.root), have_a[BOM], have_b[BOM], have_a[FILE_INDEX], have_b[FILE_INDEX])
    with _changes_lock:
        found = _CHANGES.get(key)
        if found is not None:
            _CHANGES.move_to_end(key)
    if found is None:  # content-addressed inputs: the same four blobs always give the same changes
        found = changes(_bom(session, a), _bom(session, b), _files(session, a), _files(session, b))
        with _changes_lock:
            _CHANGES[key] = found
            while len(_CHANGES) > _CHANGES_KEPT:
                _CHANGES.popitem(last=False)
    return VersionDiff(before=a.label, after=b.label, before_digest=f"sha256:{a.digest}",
                       after_digest=f"sha256:{b.digest}", **found.model_dump())


def version_diff(session: Session, before: VersionInfo, after: VersionInfo) -> VersionDiff:
    """What changed from ``before`` to ``after`` (no access check: the caller resolved both)."""
    return _diff(session, before, after)


class SinceLastPassed(BaseModel):
    base: str | None  # NAME@SERIAL of the newest older version ever promoted (None: there is none)
    diff: VersionDiff | None = None
    error: str = ""  # why the contents could not be compared (no root file system, a damaged database)


def since_last_passed(session: Session, ref: str, *, viewer: Principal = LOCAL) -> SinceLastPassed:
    """What changed in the version ``ref`` names since the last version of its product that passed
    (was promoted to stable): the dashboard's version page."""
    version = access.resolve(session.reader, viewer, ref)
    base = lookups.last_promoted_before(session.reader, version.id)
    if base is None:
        return SinceLastPassed(base=None)
    try:
        return SinceLastPassed(base=base.label, diff=_diff(session, base, version))
    except ImageciError as exc:
        return SinceLastPassed(base=base.label, error=str(exc))


def record(session: Session, label: str) -> str | None:
    """Read and store the BOM and file index of a version just built or imported (``NAME@SERIAL``);
    a damaged package database does not undo the version: the reason is returned, and ``imageci
    bom`` gives it again (a warning is logged)."""
    try:
        _stored(session, access.resolve(session.reader, LOCAL, label))
    except (NoRootFs, DamagedDatabase) as exc:
        log.warning("%s: no BOM: %s", label, exc)
        return f"{label}: no BOM: {exc}"
    return None


class BomArgs(RefArgs):
    format: BomFormat = Field(default=BomFormat.JSON, description="json (imageci's), spdx or cyclonedx")


class DiffArgs(BaseModel):
    before: str = Field(min_length=1, max_length=300)
    after: str = Field(min_length=1, max_length=300)


@operation("GET", "/images/{ref}/bom", request=BomArgs, answer=dict[str, Any], tag="images", name="bom")
def bom_op(session: Session, req: BomArgs, by: Principal) -> dict[str, Any]:
    """The packages installed in the version, read from its root file system without running it:
    ``json`` (imageci's), ``spdx`` (SPDX 2.3) or ``cyclonedx`` (CycloneDX 1.6)."""
    if req.format == BomFormat.TABLE:
        raise UsageError("format 'table' is for terminals: ask for json, spdx or cyclonedx")
    return bom_document(session, req.ref, req.format, viewer=by)


@operation("GET", "/diff", request=DiffArgs, answer=VersionDiff, tag="images", name="diff")
def diff_op(session: Session, req: DiffArgs, by: Principal) -> VersionDiff:
    """What changed from one version to another: packages added, removed, upgraded, downgraded, and
    files changed outside package management."""
    return diff(session, req.before, req.after, viewer=by)
