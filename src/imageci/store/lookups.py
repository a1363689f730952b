"""What the catalog answers to readers, written once as portable SQL over a
``store.reading.Reader``: which version a reference names, the versions of a
product, a version's attempts, runs and audit events, the runs still marked
running, and transient failures. The query operations (``app.queries``) and the
ORM catalog (``Catalog.resolve``, ``Catalog.abort_dead_runs``) both use these,
so a reference resolves the same way on every path and every database.

The rows are named tuples (as immutable as frozen dataclasses, made faster and defined in a tenth of the
time: see ``store.runlookups``), except ``VersionInfo``, which ``VersionRecord`` extends."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from imageci.errors import UnknownReferenceError
from imageci.store.accesslookups import (  # re-exported: every reader asks lookups
    TokenInfo as TokenInfo,
)
from imageci.store.accesslookups import (
    namespace_public as namespace_public,
)
from imageci.store.accesslookups import (
    products as products,
)
from imageci.store.accesslookups import (
    referenced_blobs as referenced_blobs,
)
from imageci.store.accesslookups import (
    token as token,
)
from imageci.store.accesslookups import (
    tokens as tokens,
)
from imageci.store.accesslookups import (
    vuln_feeds as vuln_feeds,
)
from imageci.store.accesslookups import (
    vuln_rows as vuln_rows,
)
from imageci.store.reading import Reader, stamp
from imageci.store.refs import ImageRef, parse_ref
from imageci.store.runlookups import AttemptInfo as AttemptInfo
from imageci.store.runlookups import RunInfo as RunInfo
from imageci.store.runlookups import attempts as attempts
from imageci.store.runlookups import first_pass as first_pass
from imageci.store.runlookups import running as running
from imageci.store.runlookups import running_ids as running_ids
from imageci.store.runlookups import runs as runs
from imageci.store.states import CHANNELS, LXD_METADATA, ROOTFS, SQUASHFS


@dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    serial: str
    digest: str
    state: str
    created_at: datetime
    architecture: str
    namespace: str
    public: bool

    @property
    def label(self) -> str:
        return f"{self.name}@{self.serial}"


_COLUMNS = "v.id, p.name, v.serial, v.digest, v.state, v.created_at, v.architecture, p.namespace, p.public"
_VERSION = f"SELECT {_COLUMNS} FROM versions v JOIN products p ON p.id = v.product_id"


def _version(row: tuple[object, ...]) -> VersionInfo:
    vid, name, serial, digest, state, created, arch, namespace, public = row
    return VersionInfo(int(str(vid)), str(name), str(serial), str(digest), str(state), stamp(created), str(arch),
                       str(namespace), bool(public))


def _in(states: set[str]) -> str:
    """A SQL list of our own state words (constants, never input)."""
    assert all(s.isalpha() for s in states)
    return ", ".join(f"'{s}'" for s in sorted(states))


def resolve(reader: Reader, ref: str | ImageRef) -> VersionInfo:
    """The version a reference names; an unknown one raises with the close names."""
    r = parse_ref(ref) if isinstance(ref, str) else ref
    if r.digest:
        found = [_version(row) for row in reader.rows(f"{_VERSION} WHERE v.digest LIKE :prefix ORDER BY v.serial",
                                                      {"prefix": f"{r.digest}%"})]
        if len({v.digest for v in found}) > 1:
            raise UnknownReferenceError(f"ambiguous digest prefix {r.digest!r}")
        if found:
            return found[-1]
        raise UnknownReferenceError(f"no image with digest sha256:{r.digest}")
    assert r.name is not None
    if not reader.rows("SELECT id FROM products WHERE name = :name", {"name": r.name}):
        names = [str(n) for (n,) in reader.rows("SELECT name FROM products")]
        close = difflib.get_close_matches(r.name, names, n=3, cutoff=0.4)
        hint = f"; did you mean: {', '.join(close)}" if close else (
            f"; known images: {', '.join(sorted(names))}" if names else "; the catalog is empty")
        raise UnknownReferenceError(f"unknown image {r.name!r}{hint}")
    if r.serial:
        rows = reader.rows(f"{_VERSION} WHERE p.name = :name AND v.serial = :serial",
                           {"name": r.name, "serial": r.serial})
        if not rows:
            serials = [str(s) for (s,) in reader.rows(
                "SELECT v.serial FROM versions v JOIN products p ON p.id = v.product_id WHERE p.name = :name "
                "ORDER BY v.serial", {"name": r.name})]
            raise UnknownReferenceError(f"{r.name} has no version {r.serial!r}; versions: "
                                        f"{', '.join(serials[-5:]) or 'none'}")
        return _version(rows[0])
    channel = r.channel or "testing"
    if channel not in CHANNELS:
        raise UnknownReferenceError(f"unknown channel {channel!r}; channels: {', '.join(CHANNELS)}")
    rows = reader.rows(f"{_VERSION} WHERE p.name = :name AND v.state IN ({_in(set(CHANNELS[channel]))}) "
                       "ORDER BY v.serial DESC LIMIT 1", {"name": r.name})
    if not rows:
        raise UnknownReferenceError(f"{r.name} has no version on channel {channel!r}")
    return _version(rows[0])


def last_promoted_before(reader: Reader, version_id: int) -> VersionInfo | None:
    """The newest version of the same product, older than this one, that was ever promoted to
    stable (its gate held, or it was forced: the version people last trusted)."""
    rows = reader.rows(
        f"{_VERSION} WHERE v.product_id = (SELECT product_id FROM versions WHERE id = :id) "
        "AND v.serial < (SELECT serial FROM versions WHERE id = :id) "
        "AND EXISTS (SELECT 1 FROM events e WHERE e.version_id = v.id AND e.to_state = 'stable') "
        "ORDER BY v.serial DESC LIMIT 1", {"id": version_id})
    return _version(rows[0]) if rows else None


def stable_for(reader: Reader, version_id: int) -> VersionInfo | None:
    """The current stable version of the same product and architecture (the newest on ``stable``),
    when it is not this one: what a verdict on this version is told against."""
    rows = reader.rows(
        f"{_VERSION} WHERE v.product_id = (SELECT product_id FROM versions WHERE id = :id) AND v.id != :id "
        "AND v.architecture = (SELECT architecture FROM versions WHERE id = :id) AND v.state = 'stable' "
        "ORDER BY v.serial DESC LIMIT 1", {"id": version_id})
    return _version(rows[0]) if rows else None


def versions(reader: Reader, name: str | None = None) -> list[tuple[VersionInfo, int]]:
    """Every version (of product ``name``) by name and serial, with the bytes of its rootfs."""
    where, params = ("WHERE p.name = :name", {"name": name}) if name else ("", {})
    rows = reader.rows(f"SELECT {_COLUMNS}, (SELECT COALESCE(SUM(a.size), 0) FROM artifacts a "
                       f"WHERE a.version_id = v.id AND a.kind = '{ROOTFS}') FROM versions v "
                       f"JOIN products p ON p.id = v.product_id {where} ORDER BY p.name, v.serial", params)
    return [(_version(row[:9]), int(row[9])) for row in rows]


def lxd_infos(reader: Reader, name: str | None = None) -> dict[int, object]:
    """Each version's ``build_info["lxd"]`` (of product ``name``), by version id (None where it has none, or
    lacks the squashfs and metadata artifacts of its LXD form)."""
    conditions = [f"(SELECT COUNT(DISTINCT a.kind) FROM artifacts a WHERE a.version_id = v.id "
                  f"AND a.kind IN ('{SQUASHFS}', '{LXD_METADATA}')) = 2", *(["p.name = :name"] if name else [])]
    rows = reader.rows(f"SELECT v.id, v.build_info FROM versions v JOIN products p ON p.id = v.product_id "
                       f"WHERE {' AND '.join(conditions)}", {"name": name} if name else {})
    out: dict[int, object] = {}
    for version_id, text in rows:
        try:
            info = json.loads(text or "{}")
        except ValueError:
            info = {}
        out[int(version_id)] = info.get("lxd") if isinstance(info, dict) else None
    return out


class ArtifactInfo(NamedTuple):
    kind: str
    filename: str
    digest: str
    size: int


def artifacts(reader: Reader, version_id: int) -> list[ArtifactInfo]:
    """A version's artifacts (its image bytes, manifest, logs, suite snapshot, configuration)."""
    return [ArtifactInfo(str(kind), str(name), str(digest), int(size)) for kind, name, digest, size in reader.rows(
        "SELECT kind, filename, digest, size FROM artifacts WHERE version_id = :id ORDER BY id", {"id": version_id})]


def build_info(reader: Reader, version_id: int) -> str | None:
    """The build info (JSON text) a version was registered with."""
    rows = reader.rows("SELECT build_info FROM versions WHERE id = :id", {"id": version_id})
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def definition(reader: Reader, version_id: int) -> str | None:
    """The image definition text a version was built from."""
    rows = reader.rows("SELECT definition FROM versions WHERE id = :id", {"id": version_id})
    return str(rows[0][0]) if rows and rows[0][0] is not None else None


def run_of(reader: Reader, run_id: int) -> tuple[RunInfo, str, VersionInfo | None] | None:
    """A run, the digest it tested and the version it was started for (None: no such run)."""
    rows = reader.rows("SELECT id, status, exit_code, actor, started_at, ended_at, options, image_digest, version_id, "
                       "repeats FROM runs WHERE id = :id", {"id": run_id})
    if not rows:
        return None
    i, status, code, actor, start, end, options, digest, version_id, repeats = rows[0]
    info = RunInfo(i, str(status), code, str(actor or ""), stamp(start), stamp(end) if end is not None else None,
                   str(options or "{}"), repeats)
    found = reader.rows(f"{_VERSION} WHERE v.id = :id", {"id": version_id}) if version_id is not None else []
    return info, str(digest), _version(found[0]) if found else None


class EventInfo(NamedTuple):
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    at: datetime


def events(reader: Reader, version_id: int) -> list[EventInfo]:
    """A version's state changes, oldest first."""
    return [EventInfo(src, str(dst), str(actor), str(reason or ""), stamp(at)) for src, dst, actor, reason, at in
            reader.rows("SELECT from_state, to_state, actor, reason, at FROM events WHERE version_id = :id "
                        "ORDER BY id", {"id": version_id})]


class PushInfo(NamedTuple):
    destination: str
    manifest_digest: str
    actor: str
    at: datetime


def pushes(reader: Reader, version_id: int) -> list[PushInfo]:
    """Where a version was pushed (`imageci push`), oldest first."""
    return [PushInfo(str(dest), str(digest), str(actor), stamp(at)) for dest, digest, actor, at in
            reader.rows("SELECT destination, manifest_digest, actor, at FROM pushes WHERE version_id = :id "
                        "ORDER BY id", {"id": version_id})]


class TransientFailure(NamedTuple):
    product: str
    serial: str
    run_id: int
    test_id: str
    testbed: str
    attempts: tuple[tuple[int, str], ...]  # (attempt number, verdict), in order
    namespace: str = ""
    public: bool = False
    state: str = ""  # the version's

    @property
    def failed_attempts(self) -> list[int]:
        return [n for n, v in self.attempts if v in ("fail", "error")]


# Retried groups (run × test × testbed) whose retry started since the cutoff: each has exactly one
# second attempt, and the partial index ix_attempts_retries holds only those, so this reads the few
# retried rows, never the table (and needs no DISTINCT, nor the planner's statistics).
_RETRIED = "SELECT run_id, test_id, testbed FROM attempts WHERE attempt = 2 AND started_at >= :since"


def transient_failures(reader: Reader, name: str | None, since: datetime) -> list[TransientFailure]:
    """Every run × test × testbed that failed or errored and then passed within one run, retried since
    ``since`` (of product ``name``), its attempts in order. Time and memory follow the number of retried tests,
    not the size of the catalog: the retries come from ix_attempts_retries, each group's attempts from
    the covering ix_attempts_group, and the image's name once per run."""
    params = {"since": reader.time(since)}
    groups: dict[tuple[int, str, str], list[tuple[int, str]]] = {}
    # (every driver hands these columns back as int and str: no conversion per row, 40,000 rows on a large
    # catalog; a group's rows arrive together, so its list is looked up once)
    key: tuple[int, str, str] | None = None
    tries: list[tuple[int, str]] = []
    for run_id, test_id, testbed, number, verdict in reader.rows(
            f"WITH retried AS ({_RETRIED}) SELECT a.run_id, a.test_id, a.testbed, a.attempt, a.verdict "
            "FROM retried r JOIN attempts a ON a.run_id = r.run_id AND a.test_id = r.test_id "
            "AND a.testbed = r.testbed", params):
        if (run_id, test_id, testbed) != key:
            key = (run_id, test_id, testbed)
            tries = groups.setdefault(key, [])
        tries.append((number, verdict))
    labels: dict[int, list[tuple[str, str, str, bool, str]]] = {}
    where = " AND p.name = :name" if name is not None else ""
    for run_id, product, serial, namespace, public, state in reader.rows(
            "SELECT ru.id, p.name, v.serial, p.namespace, p.public, v.state FROM runs ru "
            "JOIN versions v ON v.digest = ru.image_digest JOIN products p ON p.id = v.product_id "
            f"WHERE ru.id IN (SELECT run_id FROM attempts WHERE attempt = 2 AND started_at >= :since)"
            f"{where} ORDER BY ru.id, p.name, v.serial", {**params, **({"name": name} if name is not None else {})}):
        labels.setdefault(int(run_id), []).append((str(product), str(serial), str(namespace), bool(public),
                                                   str(state)))
    found = []
    for (run_id, test_id, testbed), tries in sorted(groups.items()):
        tries.sort()
        if "pass" not in {v for n, v in tries if n > 1} or not {"fail", "error"} & {v for _n, v in tries}:
            continue
        for product, serial, namespace, public, state in labels.get(run_id, []):
            found.append(TransientFailure(product, serial, run_id, test_id, testbed, tuple(tries), namespace,
                                          public, state))
    return found


class FeedRow(NamedTuple):
    """A version on a channel, with the artifacts a feed lists."""

    version: VersionInfo
    build_info: str  # JSON
    updated: datetime  # its newest event (published, promoted)
    artifacts: list[ArtifactInfo]


def feed(reader: Reader, namespace: str, states: set[str], kinds: set[str], required: set[str]) -> list[FeedRow]:
    """The versions of ``namespace``'s products in ``states`` with their artifacts of ``kinds``, those
    that have every one of ``required``, by name and serial: one query, however many versions."""
    assert all(k.replace("-", "").isalpha() for k in kinds)
    wanted = ", ".join(f"'{k}'" for k in sorted(kinds))
    rows = reader.rows(
        f"SELECT {_COLUMNS}, v.build_info, (SELECT MAX(e.at) FROM events e WHERE e.version_id = v.id), "
        f"a.kind, a.filename, a.digest, a.size FROM versions v JOIN products p ON p.id = v.product_id "
        f"JOIN artifacts a ON a.version_id = v.id AND a.kind IN ({wanted}) "
        f"WHERE p.namespace = :namespace AND v.state IN ({_in(states)}) ORDER BY p.name, v.serial, a.kind",
        {"namespace": namespace})
    out: list[FeedRow] = []
    for row in rows:
        art = ArtifactInfo(str(row[11]), str(row[12]), str(row[13]), int(str(row[14])))
        if out and out[-1].version.id == int(str(row[0])):
            out[-1].artifacts.append(art)
            continue
        out.append(FeedRow(_version(row[:9]), str(row[9] or "{}"), stamp(row[10] or row[5]), [art]))
    return [r for r in out if {a.kind for a in r.artifacts} >= required]


class TestAttempt(NamedTuple):
    """One attempt of one test on a version of a product (its history)."""

    serial: str
    run_id: int
    testbed: str
    verdict: str
    started_at: datetime
    ended_at: datetime


def test_attempts(reader: Reader, name: str, test_id: str) -> list[TestAttempt]:
    """Every attempt of ``test_id`` on any version of product ``name``, by serial, oldest first (through
    the test_id index: the rows of that test only)."""
    return [TestAttempt(str(serial), int(run), str(bed), str(verdict), stamp(start), stamp(end))
            for serial, run, bed, verdict, start, end in reader.rows(
                "SELECT v.serial, a.run_id, a.testbed, a.verdict, a.started_at, a.ended_at FROM attempts a "
                "JOIN versions v ON v.digest = a.image_digest JOIN products p ON p.id = v.product_id "
                "WHERE a.test_id = :test AND p.name = :name ORDER BY v.serial, a.id",
                {"test": test_id, "name": name})]
