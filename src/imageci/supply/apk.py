"""Alpine packages from apk's installed database, ``lib/apk/db/installed``."""

from __future__ import annotations

from pathlib import Path

from imageci.rootpath import read_text
from imageci.supply.packages import Distro, Package, purl
from imageci.supply.records import DamagedDatabase, apk_records

INSTALLED = "lib/apk/db/installed"


def apk_packages(root: Path, distro: Distro | None) -> list[Package] | None:
    """The installed apk packages (None: the image has no apk database)."""
    text = read_text(root, INSTALLED, limit=256 << 20)
    if text is None:
        return None
    found = []
    for record in apk_records(text, f"/{INSTALLED}"):
        name, version = record.get("P"), record.get("V")
        if not name or not version:
            raise DamagedDatabase(f"{record.where}: a record without {'P (name)' if not name else 'V (version)'}")
        origin = record.get("o") or name
        licenses = [record.get("L")] if record.get("L") else []
        found.append(Package(type="apk", name=name, version=version, arch=record.get("A"), source=origin,
                             source_version=version, licenses=licenses, found_in=f"/{INSTALLED}",
                             purl=purl("apk", distro.id if distro else "alpine", name, version, arch=record.get("A"),
                                       distro=distro.qualifier() if distro else "",
                                       upstream=origin if origin != name else "")))
    return found
