"""Which known vulnerabilities a BOM's packages have: feed rows are matched by source package and
release, and installed versions are compared in Debian's order (never as strings).

A row applies when its release is the image's (the tracker's codename, ``bookworm``; OSV's
``Debian:12``) and its package is the source of an installed Debian package. It makes the package
vulnerable when the status is ``open`` or ``undetermined`` (from its ``introduced`` version, if
any), or ``resolved`` in a version newer than the installed source version (and not older than
``introduced``); ``not-affected`` never does. Several feeds (or an OSV advisory and the CVE it
aliases) naming one vulnerability become one finding: the most severe, the earliest fix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from imageci.supply.ordering import compare
from imageci.supply.packages import Bom

RANK = {"unknown": -1, "unimportant": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


@dataclass(frozen=True)
class Row:
    """A feed's word on one vulnerability of one source package in one release (``VulnRecord``)."""

    vuln: str
    aliases: str  # space-separated
    package: str
    release: str
    status: str
    introduced: str | None
    fixed: str | None
    severity: str
    description: str
    feed: str


class Finding(BaseModel):
    id: str  # the CVE when one is known, else the advisory's id
    aliases: list[str]  # the other ids it is known by (DSA-…, the OSV id)
    severity: str
    package: str  # the source package
    binaries: list[str]  # the installed packages built from it
    installed: str  # the installed source version
    fixed: str | None  # the first fixed version (None: no fix yet)
    status: str  # open | undetermined | fixed (a fix exists, not installed)
    feeds: list[str]
    description: str = ""

    @property
    def fix_available(self) -> bool:
        return self.fixed is not None


def releases(bom: Bom) -> list[str]:
    """The release names feeds use for this image (empty: not a Debian image)."""
    if bom.distro is None or bom.distro.id != "debian":
        return []
    names = [bom.distro.codename] if bom.distro.codename else []
    if bom.distro.version_id:
        names.append(f"Debian:{bom.distro.version_id.split('.')[0]}")
    return names


def _affects(row: Row, installed: str) -> bool:
    if row.status == "not-affected":
        return False
    if row.introduced is not None and compare("deb", installed, row.introduced) < 0:
        return False
    if row.status in ("open", "undetermined"):
        return True
    return row.fixed is not None and compare("deb", installed, row.fixed) < 0


def _primary(row: Row) -> tuple[str, list[str]]:
    ids = [row.vuln, *row.aliases.split()]
    cve = next((i for i in ids if i.startswith("CVE-")), row.vuln)
    return cve, [i for i in ids if i != cve]


def match(bom: Bom, rows: Iterable[Row]) -> list[Finding]:
    """The vulnerabilities of the BOM's Debian packages according to ``rows``, most severe first."""
    sources: dict[str, tuple[str, list[str]]] = {}
    for p in bom.packages:
        if p.type == "deb":
            version, binaries = sources.setdefault(p.source, (p.source_version, []))
            binaries.append(p.name)
    found: dict[tuple[str, str], Finding] = {}
    mine = set(releases(bom))
    for row in rows:
        known = sources.get(row.package)
        if known is None or row.release not in mine or not _affects(row, known[0]):
            continue
        cve, others = _primary(row)
        key = (cve, row.package)
        status = "fixed" if row.fixed is not None else row.status
        old = found.get(key)
        if old is None:
            found[key] = Finding(id=cve, aliases=others, severity=row.severity, package=row.package,
                                 binaries=sorted(known[1]), installed=known[0], fixed=row.fixed, status=status,
                                 feeds=[row.feed], description=row.description)
            continue
        old.aliases = sorted(set(old.aliases) | set(others))
        if RANK[row.severity] > RANK[old.severity]:
            old.severity = row.severity
        if row.fixed is not None and (old.fixed is None or compare("deb", row.fixed, old.fixed) < 0):
            old.fixed, old.status = row.fixed, "fixed"
        if row.feed not in old.feeds:
            old.feeds.append(row.feed)
        old.description = old.description or row.description
    return sorted(found.values(), key=lambda f: (-RANK[f.severity], f.package, f.id))


def packages_and_releases(bom: Bom) -> tuple[Sequence[str], Sequence[str]]:
    """What to ask the catalog for: the BOM's Debian source packages and its release names."""
    return sorted({p.source for p in bom.packages if p.type == "deb"}), releases(bom)
