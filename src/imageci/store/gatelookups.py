"""What a gate reads from the catalog, as portable SQL over a ``store.reading.Reader``
(``store.lookups`` holds the rest): a version with what it carries (its definition,
build info and artifacts), the candidates for the versions built with it for other
architectures, its product's consumers and quarantine entries, and when each test
first ran. ``imageci gate`` judges a version through these alone: no ORM import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

from imageci.store.lookups import _COLUMNS, ArtifactInfo, VersionInfo, _version
from imageci.store.reading import Reader, stamp


@dataclass(frozen=True)
class VersionRecord(VersionInfo):
    """A version with what it carries: what ``app.versions`` reads of one (an ORM ``Version`` answers the same)."""

    definition: str | None = None  # the image definition's text it was built from
    build_info: str | None = None  # JSON
    artifacts: tuple[ArtifactInfo, ...] = ()


def _records(reader: Reader, where: str, params: dict[str, object]) -> list[VersionRecord]:
    rows = reader.rows(f"SELECT {_COLUMNS}, v.definition, v.build_info FROM versions v "
                       f"JOIN products p ON p.id = v.product_id WHERE {where} ORDER BY v.serial", params)
    if not rows:
        return []
    ids = {int(str(row[0])) for row in rows}
    held: dict[int, list[ArtifactInfo]] = {}
    names = ", ".join(f":v{i}" for i in range(len(ids)))
    for vid, kind, filename, digest, size in reader.rows(
            f"SELECT version_id, kind, filename, digest, size FROM artifacts WHERE version_id IN ({names}) "
            "ORDER BY id", {f"v{i}": v for i, v in enumerate(sorted(ids))}):
        held.setdefault(int(vid), []).append(ArtifactInfo(str(kind), str(filename), str(digest), int(size)))
    out = []
    for row in rows:
        info = _version(row[:9])
        out.append(VersionRecord(**vars(info), definition=None if row[9] is None else str(row[9]),
                                 build_info=None if row[10] is None else str(row[10]),
                                 artifacts=tuple(held.get(info.id, ()))))
    return out


def record(reader: Reader, version_id: int) -> VersionRecord:
    """The version ``version_id`` with its definition, build info and artifacts."""
    found = _records(reader, "v.id = :id", {"id": version_id})
    if not found:
        raise LookupError(f"no version {version_id}")
    return found[0]


def records(reader: Reader, name: str, states: set[str]) -> list[VersionRecord]:
    """The versions of product ``name`` in ``states`` (our own state words), oldest serial first."""
    params: dict[str, object] = {"name": name, **{f"s{i}": s for i, s in enumerate(sorted(states))}}
    wanted = ", ".join(f":s{i}" for i in range(len(states)))
    return _records(reader, f"p.name = :name AND v.state IN ({wanted})", params)


class ConsumerInfo(NamedTuple):
    """A registered consumer of a product, as a gate judges it (``store.models.Consumer``'s columns)."""

    id: int
    name: str
    command: str
    setup: str | None
    timeout: int
    gating: bool
    snapshot: str | None
    revision: str | None


def consumers(reader: Reader, product: str) -> list[ConsumerInfo]:
    """The consumers registered for ``product`` and not removed, by name."""
    return [ConsumerInfo(int(i), str(name), str(command), None if setup is None else str(setup), int(timeout),
                         bool(gating), None if snap is None else str(snap), None if rev is None else str(rev))
            for i, name, command, setup, timeout, gating, snap, rev in reader.rows(
                "SELECT c.id, c.name, c.command, c.setup, c.timeout, c.gating, c.snapshot, c.revision "
                "FROM consumers c JOIN products p ON p.id = c.product_id WHERE p.name = :name "
                "AND c.removed_at IS NULL ORDER BY c.name", {"name": product})]


class QuarantineInfo(NamedTuple):
    """A quarantine entry kept in the catalog (``store.models.Quarantine``'s columns a waiver reads)."""

    id: int
    test: str
    tracker: str
    expires: date
    mode: str
    testbeds: str | None  # JSON list
    arch: str | None  # JSON list
    reason: str


def quarantines(reader: Reader, product: str) -> list[QuarantineInfo]:
    """The quarantine entries kept for ``product`` and not lifted, oldest first."""
    return [QuarantineInfo(int(i), str(test), str(tracker), day if isinstance(day, date) else
                           date.fromisoformat(str(day)[:10]), str(mode), testbeds, arch, str(reason or ""))
            for i, test, tracker, day, mode, testbeds, arch, reason in reader.rows(
                "SELECT q.id, q.test, q.tracker, q.expires, q.mode, q.testbeds, q.arch, q.reason FROM quarantines q "
                "JOIN products p ON p.id = q.product_id WHERE p.name = :name AND q.lifted_at IS NULL "
                "ORDER BY q.id", {"name": product})]


def first_seen(reader: Reader, product: str, test_ids: list[str]) -> dict[str, datetime]:
    """When each of ``test_ids`` first ran against any version of ``product`` (absent: never)."""
    if not test_ids:
        return {}
    names = ", ".join(f":t{i}" for i in range(len(test_ids)))
    return {str(tid): stamp(when) for tid, when in reader.rows(
        f"SELECT a.test_id, MIN(a.started_at) FROM attempts a JOIN versions v ON v.digest = a.image_digest "
        f"JOIN products p ON p.id = v.product_id WHERE p.name = :name AND a.test_id IN ({names}) "
        "GROUP BY a.test_id", {"name": product, **{f"t{i}": t for i, t in enumerate(test_ids)}})}
