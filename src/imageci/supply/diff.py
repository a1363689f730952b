"""What changed between two versions of an image: packages added, removed, upgraded and
downgraded (each package manager's version ordering), and files changed outside package
management: files no package owns, and files of a package whose version did not change (an edited
configuration file, a customize step's work). A file that changed because its package changed
is the package's change, counted but not listed."""

from __future__ import annotations

from pydantic import BaseModel

from imageci.supply.files import MANAGER_STATE, FileEntry, FileIndex
from imageci.supply.ordering import compare
from imageci.supply.packages import Bom


class PackageChange(BaseModel):
    type: str  # deb, apk, rpm
    name: str
    arch: str
    change: str  # added | removed | upgraded | downgraded
    before: str | None = None
    after: str | None = None


class FileChange(BaseModel):
    path: str  # absolute, as the image sees it
    change: str  # added | removed | changed
    before: FileEntry | None = None
    after: FileEntry | None = None


class Changes(BaseModel):
    packages: list[PackageChange] = []
    files: list[FileChange] = []
    files_by_packages: int = 0  # file changes explained by the package changes (not listed)


def package_changes(a: Bom, b: Bom) -> list[PackageChange]:
    before = {p.key: p for p in a.packages}
    after = {p.key: p for p in b.packages}
    out = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old is None and new is not None:
            out.append(PackageChange(type=key[0], name=key[1], arch=key[2], change="added", after=new.version))
        elif new is None and old is not None:
            out.append(PackageChange(type=key[0], name=key[1], arch=key[2], change="removed", before=old.version))
        elif old is not None and new is not None and old.version != new.version:
            order = compare(key[0], new.version, old.version)
            if order != 0:
                out.append(PackageChange(type=key[0], name=key[1], arch=key[2],
                                         change="upgraded" if order > 0 else "downgraded",
                                         before=old.version, after=new.version))
    return out


def _same(x: FileEntry, y: FileEntry) -> bool:
    return (x.mode, x.size, x.sha256) == (y.mode, y.size, y.sha256)


def changes(a: Bom, b: Bom, files_a: FileIndex, files_b: FileIndex) -> Changes:
    packages = package_changes(a, b)
    moved = {p.name for p in packages}
    result = Changes(packages=packages)
    for path in sorted(files_a.files.keys() | files_b.files.keys()):
        if path.startswith(MANAGER_STATE):
            continue
        old, new = files_a.files.get(path), files_b.files.get(path)
        if old is not None and new is not None and _same(old, new):
            continue
        if (old is not None and old.owner in moved) or (new is not None and new.owner in moved):
            result.files_by_packages += 1
            continue
        change = "added" if old is None else "removed" if new is None else "changed"
        result.files.append(FileChange(path=f"/{path}", change=change, before=old, after=new))
    return result
