"""Known vulnerabilities: feeds imported from files (``imageci vulndb import``), a version's
findings (``imageci vulns``), and the vulnerability part of its gate — the one ``gate``,
``promote``, the API and the dashboard all evaluate."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pydantic import BaseModel

from imageci.app import inventory
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import NoArgs, RefArgs, operation
from imageci.app.session import Session
from imageci.definitions.image import VulnGate
from imageci.errors import Forbidden, UsageError
from imageci.policy.sections import GateSection
from imageci.policy.vulngate import evaluate_vulns
from imageci.store import lookups
from imageci.store.lookups import VersionInfo
from imageci.store.reading import stamp
from imageci.store.states import as_utc
from imageci.supply.packages import Bom
from imageci.supply.vulnfeeds import read_feed
from imageci.supply.vulnmatch import Finding, Row, match, packages_and_releases

FEED_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class FeedRow(BaseModel):
    name: str
    format: str  # debian-tracker | osv
    source: str
    sha256: str
    records: int
    skipped: int
    imported: str  # ISO 8601, seconds
    by: str


class ImportedFeed(FeedRow):
    warnings: list[str]  # records left out, each named


class VulnReport(BaseModel):
    image: str  # NAME@SERIAL
    digest: str
    releases: list[str]  # the release names matched (bookworm, Debian:12)
    feeds: list[str]  # the feeds consulted
    findings: list[Finding]


def import_feed(session: Session, path: Path, *, name: str | None = None, by: Principal = LOCAL) -> ImportedFeed:
    """Import a feed file, replacing the feed of the same name in one transaction (default name: its
    format). Needs scope ``admin`` on a server."""
    import re

    from imageci.store.models import VulnFeed

    may_import(by)
    feed = read_feed(path)
    name = name or feed.format
    if not re.fullmatch(FEED_NAME, name):
        raise UsageError(f"bad feed name {name!r}: lowercase letters, digits, '.', '_' and '-'")
    rows = [{"vuln": r.vuln, "aliases": " ".join(r.aliases), "package": r.package, "release": r.release,
             "status": r.status, "introduced": r.introduced, "fixed": r.fixed, "severity": r.severity,
             "description": r.description} for r in feed.records]
    saved = session.catalog.import_vulns(
        VulnFeed(name=name, format=feed.format, source=path.name, sha256=feed.sha256, records=len(rows),
                 skipped=len(feed.warnings)), rows, actor=None if by == LOCAL else by.name)
    return ImportedFeed(name=saved.name, format=saved.format, source=saved.source, sha256=saved.sha256,
                        records=saved.records, skipped=saved.skipped,
                        imported=as_utc(saved.imported_at).isoformat(timespec="seconds"), by=saved.imported_by,
                        warnings=feed.warnings)


def may_import(by: Principal) -> None:
    if by != LOCAL and Scope.ADMIN not in by.scopes:
        raise Forbidden(f"{by.name} may not import vulnerability feeds: it needs scope 'admin'")


def feeds(session: Session) -> list[FeedRow]:
    return [FeedRow(name=n, format=f, source=s, sha256=h, records=int(r), skipped=int(k),
                    imported=stamp(at).isoformat(timespec="seconds"), by=b)
            for n, f, s, h, r, k, at, b in lookups.vuln_feeds(session.reader)]


def _findings(session: Session, bom: Bom) -> tuple[list[Finding], list[str], list[str]]:
    packages, releases = packages_and_releases(bom)
    rows = [Row(*r) for r in lookups.vuln_rows(session.reader, releases, packages)]
    return match(bom, rows), list(releases), [f.name for f in feeds(session)]


def report(session: Session, ref: str, *, viewer: Principal = LOCAL) -> VulnReport:
    """The known vulnerabilities of the version ``ref`` names, most severe first."""
    who, bom = inventory.bom(session, ref, viewer=viewer)
    found, releases, names = _findings(session, bom)
    return VulnReport(image=who.label, digest=f"sha256:{who.digest}", releases=releases, feeds=names,
                      findings=found)


def gate_section(session: Session, version: VersionInfo, policy: VulnGate, today: date) -> GateSection:
    """The vulnerability part of the version's gate, evaluated on the feeds imported now."""
    try:
        bom = inventory.bom(session, version.label)[1]
    except UsageError as exc:
        return GateSection("vulnerabilities", False, f"no BOM to match: {exc}")
    found, _releases, names = _findings(session, bom)
    return evaluate_vulns(policy, found, names, today)


@operation("GET", "/vulndb", request=NoArgs, answer=list[FeedRow], tag="vulnerabilities", needs_token=True,
           name="vulndb")
def vulndb_op(session: Session, _req: NoArgs, _by: Principal) -> list[FeedRow]:
    """The imported vulnerability feeds."""
    return feeds(session)


@operation("GET", "/images/{ref}/vulns", request=RefArgs, answer=VulnReport, tag="images", name="vulns")
def vulns_op(session: Session, req: RefArgs, by: Principal) -> VulnReport:
    """The version's known vulnerabilities according to the imported feeds, most severe first."""
    return report(session, req.ref, viewer=by)
