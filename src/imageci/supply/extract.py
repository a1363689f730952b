"""A root file system's bill of materials, read from its package databases without running it."""

from __future__ import annotations

from pathlib import Path

from imageci.rootpath import os_release
from imageci.supply.apk import apk_packages
from imageci.supply.dpkg import dpkg_packages
from imageci.supply.packages import Bom, Distro
from imageci.supply.rpm import rpm_packages


def distro_of(root: Path) -> Distro | None:
    release = os_release(root)
    if not release.get("ID"):
        return None
    return Distro(id=release["ID"], version_id=release.get("VERSION_ID", ""),
                  codename=release.get("VERSION_CODENAME", ""), pretty_name=release.get("PRETTY_NAME", ""))


def extract_bom(root: Path) -> Bom:
    """Every package the image's dpkg, apk and rpm databases list as installed. A damaged database
    raises :class:`~imageci.supply.records.DamagedDatabase` (``file:line`` and the record): an
    inventory that silently missed packages would be worse than none."""
    distro = distro_of(root)
    bom = Bom(distro=distro)
    for found in (dpkg_packages(root, distro), apk_packages(root, distro)):
        bom.packages += found or []
    rpms, warnings = rpm_packages(root, distro)
    bom.packages += rpms or []
    bom.warnings += warnings
    return bom
