"""Debian packages from dpkg's database: ``var/lib/dpkg/status``, and the one-file-per-package
``var/lib/dpkg/status.d/`` that distroless images carry instead; licenses from
``usr/share/doc/PACKAGE/copyright``."""

from __future__ import annotations

import re
from pathlib import Path

from imageci.rootpath import listdir, read_text
from imageci.supply.licenses import declared
from imageci.supply.ordering import is_debian_version
from imageci.supply.packages import Distro, Package, purl
from imageci.supply.records import DamagedDatabase, Record, paragraphs

STATUS = "var/lib/dpkg/status"
STATUS_D = "var/lib/dpkg/status.d"
SOURCE = re.compile(r"(\S+)(?:\s+\((\S+)\))?")
# dpkg's package states with the package's files on disk ("config-files" and "not-installed" have none)
ON_DISK = {"installed", "half-configured", "unpacked", "half-installed", "triggers-awaited", "triggers-pending"}


def _installed(record: Record) -> bool:
    status = record.get("Status")
    if not status:  # status.d records carry none: what is listed is installed
        return True
    words = status.split()
    if len(words) != 3:
        raise DamagedDatabase(f"{record.where}: Status {status!r} is not 'WANT FLAG STATE'")
    return words[2] in ON_DISK


def _package(root: Path, record: Record, distro: Distro | None, found_in: str,
             licenses: dict[str, list[str]]) -> Package | None:
    if not _installed(record):
        return None
    name, version = record.get("Package"), record.get("Version")
    if not name or not version:
        raise DamagedDatabase(f"{record.where}: a record without {'Package' if not name else 'Version'}")
    if not is_debian_version(version):
        raise DamagedDatabase(f"{record.where}: {name}: {version!r} is not a Debian version")
    source, source_version = name, version
    if record.get("Source"):
        m = SOURCE.fullmatch(record.get("Source"))
        if m is None:
            raise DamagedDatabase(f"{record.where}: {name}: Source {record.get('Source')!r} is not 'NAME [(VERSION)]'")
        source, source_version = m.group(1), m.group(2) or version
    arch = record.get("Architecture")
    upstream = ""
    if source != name or source_version != version:
        upstream = source if source_version == version else f"{source}@{source_version}"
    if name not in licenses:
        text = read_text(root, f"usr/share/doc/{name}/copyright", limit=4 << 20)
        licenses[name] = declared(text) if text else []
    return Package(type="deb", name=name, version=version, arch=arch, source=source, source_version=source_version,
                   licenses=licenses[name], found_in=found_in,
                   purl=purl("deb", distro.id if distro else "debian", name, version, arch=arch,
                             distro=distro.qualifier() if distro else "", upstream=upstream))


def dpkg_packages(root: Path, distro: Distro | None) -> list[Package] | None:
    """The installed Debian packages (None: the image has no dpkg database). A damaged database
    raises :class:`DamagedDatabase` naming ``file:line``."""
    found: list[Package] = []
    licenses: dict[str, list[str]] = {}
    status = read_text(root, STATUS, limit=256 << 20)
    extra = [n for n in listdir(root, STATUS_D) if not n.startswith(".") and not n.endswith(".md5sums")]
    if status is None and not extra:
        return None
    sources: list[tuple[str, str | None]] = [(STATUS, status)] if status is not None else []
    sources += [(f"{STATUS_D}/{n}", read_text(root, f"{STATUS_D}/{n}", limit=16 << 20)) for n in extra]
    for rel, text in sources:
        for record in paragraphs(text or "", f"/{rel}"):
            package = _package(root, record, distro, f"/{rel}", licenses)
            if package is not None:
                found.append(package)
    return found
