"""A version's bill of materials: the packages its package managers say are installed, each with a
package URL (purl), and the distribution they come from. Stored with the version as JSON."""

from __future__ import annotations

from packageurl import PackageURL
from pydantic import BaseModel

BOM_SCHEMA = 1


class Distro(BaseModel):
    id: str  # os-release ID: debian, alpine, fedora
    version_id: str = ""  # os-release VERSION_ID: 12, 3.19.1 (empty: none, e.g. Debian testing)
    codename: str = ""
    pretty_name: str = ""

    def qualifier(self) -> str:
        """The purl ``distro`` qualifier: ``debian-12``."""
        return f"{self.id}-{self.version_id}" if self.version_id else self.id


class Package(BaseModel):
    type: str  # the purl type of its package manager: deb, apk, rpm
    name: str
    version: str
    arch: str = ""  # as the package manager names it: amd64, all, x86_64, noarch
    source: str = ""  # source package (deb: Source, apk: origin, rpm: the source rpm's name)
    source_version: str = ""
    licenses: list[str] = []  # as declared (Debian short names, apk's and rpm's License fields)
    purl: str
    found_in: str  # the database it was read from, relative to the root

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a package across versions of an image: its manager, name and arch."""
        return (self.type, self.name, self.arch)


class Bom(BaseModel):
    schema_version: int = BOM_SCHEMA
    distro: Distro | None = None
    packages: list[Package] = []
    warnings: list[str] = []  # records left out, each naming its file:line and why

    def purls(self) -> set[str]:
        return {p.purl for p in self.packages}


def purl(type_: str, namespace: str | None, name: str, version: str, **qualifiers: str) -> str:
    """A package URL; empty qualifiers are left out (``arch``, ``distro``, ``upstream``, ``epoch``)."""
    qualifiers = {k: v for k, v in qualifiers.items() if v}
    return PackageURL(type=type_, namespace=namespace or None, name=name, version=version,
                      qualifiers=qualifiers).to_string()


def canonical_purl(text: str) -> str:
    """A purl in canonical form (qualifiers sorted, percent-encoding normalised): two tools' purls
    compare equal exactly when they name the same thing."""
    return PackageURL.from_string(text).to_string()
