"""Vulnerability feeds, read from files the user provides (nothing is fetched at run time):

- the Debian Security Tracker's JSON (``https://security-tracker.debian.org/tracker/data/json``):
  ``{source package: {CVE: {"description", "releases": {codename: {"status", "fixed_version",
  "urgency", …}}}}}``. ``status`` is ``resolved`` (fixed in ``fixed_version``; ``"0"`` is the
  tracker's ``<not-affected>``), ``open`` (no fix yet) or ``undetermined``.
- OSV records of the Debian ecosystems (``Debian:12``, …; osv.dev's ``Debian/all.zip``): one
  record, a list of them, or a zip of record files. Each affected source package's ``ECOSYSTEM``
  ranges (``introduced``/``fixed`` events) become one row each.

A file that is neither is refused, as is one whose shape is wrong where it matters (naming the
entry); a record whose version cannot be a Debian version is left out with a warning naming it.
Either way nothing is imported until the whole file has been read."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageci.errors import UsageError
from imageci.supply.ordering import is_debian_version

TRACKER = "debian-tracker"
OSV = "osv"
STATUSES = {"open", "resolved", "undetermined"}
URGENCY = {"unimportant": "unimportant", "low": "low", "medium": "medium", "high": "high", "critical": "critical",
           "moderate": "medium", "important": "high"}
MAX_FEED = 2 << 30  # bytes: a feed file larger than this is refused before it is read


class BadFeed(UsageError):
    """A vulnerability feed file that cannot be read as its format says: nothing of it is imported."""


@dataclass(frozen=True)
class FeedRecord:
    vuln: str
    aliases: tuple[str, ...]
    package: str  # source package
    release: str  # bookworm | Debian:12
    status: str  # open | resolved | not-affected | undetermined
    introduced: str | None
    fixed: str | None
    severity: str
    description: str


@dataclass
class Feed:
    format: str
    sha256: str
    records: list[FeedRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def severity(word: object) -> str:
    """A feed's urgency or severity word as one of the gate's: unimportant … critical, or unknown
    (the tracker's ``not yet assigned``, ``end-of-life``; its ``*``/``**`` marks are dropped)."""
    if not isinstance(word, str):
        return "unknown"
    return URGENCY.get(word.strip().rstrip("*").strip().lower(), "unknown")


def _tracker(doc: dict[str, Any], name: str, feed: Feed) -> None:
    for package, vulns in doc.items():
        if not isinstance(vulns, dict):
            raise BadFeed(f"{name}: package {package!r}: expected an object of CVEs, found {type(vulns).__name__}")
        for vuln, entry in vulns.items():
            where = f"{name}: {package}/{vuln}"
            if not isinstance(entry, dict) or not isinstance(entry.get("releases", {}), dict):
                raise BadFeed(f"{where}: expected an object with 'releases'")
            description = str(entry.get("description") or "")[:2000]
            for release, state in entry.get("releases", {}).items():
                if not isinstance(state, dict) or state.get("status") not in STATUSES:
                    raise BadFeed(f"{where}, {release}: status must be one of {', '.join(sorted(STATUSES))}, "
                                  f"found {state.get('status') if isinstance(state, dict) else state!r}")
                fixed = state.get("fixed_version")
                status = state["status"]
                if status == "resolved":
                    if not isinstance(fixed, str) or not fixed:
                        raise BadFeed(f"{where}, {release}: resolved without a fixed_version")
                    if fixed == "0":
                        status, fixed = "not-affected", None
                    elif not is_debian_version(fixed):
                        feed.warnings.append(f"{where}, {release}: fixed_version {fixed!r} is not a Debian "
                                             "version; left out")
                        continue
                else:
                    fixed = None
                feed.records.append(FeedRecord(vuln, (), package, release, status, None, fixed,
                                               severity(state.get("urgency")), description))


def _osv_record(doc: Any, where: str, feed: Feed) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
        raise BadFeed(f"{where}: an OSV record needs an 'id'")
    vuln = doc["id"]
    where = f"{where} ({vuln})"
    aliases = tuple(a for a in doc.get("aliases") or () if isinstance(a, str))
    description = str(doc.get("summary") or doc.get("details") or "")[:2000]
    top = severity((doc.get("database_specific") or {}).get("severity"))
    if not isinstance(doc.get("affected", []), list):
        raise BadFeed(f"{where}: 'affected' must be a list")
    for n, affected in enumerate(doc.get("affected", [])):
        package = (affected or {}).get("package") or {}
        ecosystem, name = package.get("ecosystem"), package.get("name")
        if not isinstance(ecosystem, str) or not isinstance(name, str):
            raise BadFeed(f"{where}: affected[{n}] needs a package with an ecosystem and a name")
        if ecosystem.split(":")[0] != "Debian":
            continue  # other ecosystems: not ours to match
        level = severity((affected.get("ecosystem_specific") or {}).get("urgency"))
        level = level if level != "unknown" else top
        for m, rng in enumerate(affected.get("ranges") or []):
            if not isinstance(rng, dict) or rng.get("type") != "ECOSYSTEM":
                continue  # GIT and SEMVER ranges say nothing about Debian versions
            introduced: str | None = None  # None: from the first version
            pending = False  # an introduced event not yet closed by a fixed one
            found: list[FeedRecord] = []  # kept only when the whole range reads
            events = rng.get("events")
            if not isinstance(events, list):
                raise BadFeed(f"{where}: affected[{n}].ranges[{m}] needs a list of events")
            for event in events:
                if not isinstance(event, dict) or len(event) != 1:
                    raise BadFeed(f"{where}: affected[{n}].ranges[{m}]: an event is one of introduced, fixed, "
                                  f"last_affected, limit: {event!r}")
                (kind, version), = event.items()
                if not isinstance(version, str) or not (version == "0" or is_debian_version(version)):
                    feed.warnings.append(f"{where}: {name} {kind} {version!r} is not a Debian version; that range "
                                         "is left out")
                    found, pending = [], False
                    break
                if kind == "introduced":
                    introduced, pending = (None if version == "0" else version), True
                elif kind == "fixed":
                    found.append(FeedRecord(vuln, aliases, name, ecosystem, "resolved", introduced, version, level,
                                            description))
                    introduced, pending = None, False
                else:
                    feed.warnings.append(f"{where}: {name}: {kind} events are not supported; that range is left out")
                    found, pending = [], False
                    break
            if pending:
                found.append(FeedRecord(vuln, aliases, name, ecosystem, "open", introduced, None, level, description))
            feed.records += found


def _osv(docs: Iterator[tuple[str, Any]], feed: Feed) -> None:
    for where, doc in docs:
        _osv_record(doc, where, feed)


def _load_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise BadFeed(f"{where}:{exc.lineno}:{exc.colno}: not JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise BadFeed(f"{where}: not JSON (not UTF-8 text)") from None


def _is_osv(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("id"), str) and ("affected" in doc or "modified" in doc)


def read_feed(path: Path) -> Feed:
    """The records of a feed file, its format found from its content."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BadFeed(f"{path}: cannot read it ({exc.strerror})") from None
    if size > MAX_FEED:
        raise BadFeed(f"{path}: {size} bytes is more than a feed file may have ({MAX_FEED})")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if zipfile.is_zipfile(path):
        feed = Feed(OSV, digest)
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".json"))
            if not names:
                raise BadFeed(f"{path}: a zip without OSV records (*.json)")
            _osv(((f"{path}!{n}", _load_json(archive.read(n), f"{path}!{n}")) for n in names), feed)
        return feed
    doc = _load_json(data, str(path))
    if _is_osv(doc):
        feed = Feed(OSV, digest)
        _osv(iter([(str(path), doc)]), feed)
        return feed
    if isinstance(doc, list) and doc and all(_is_osv(d) for d in doc):
        feed = Feed(OSV, digest)
        _osv(((f"{path}[{i}]", d) for i, d in enumerate(doc)), feed)
        return feed
    if isinstance(doc, dict) and doc and all(isinstance(v, dict) for v in doc.values()) and any(
            isinstance(e, dict) and "releases" in e for v in doc.values() for e in v.values()):
        feed = Feed(TRACKER, digest)
        _tracker(doc, str(path), feed)
        return feed
    raise BadFeed(f"{path}: neither the Debian Security Tracker's JSON ({{package: {{CVE: {{releases}}}}}}) nor OSV "
                  "records (an object with 'id' and 'affected', a list of them, or a zip of them)")
