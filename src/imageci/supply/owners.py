"""Which package owns each file, from the package databases' file lists (dpkg's
``var/lib/dpkg/info/*.list``, apk's ``F:``/``R:`` lines, rpm's FILENAMES). Paths are given as the
image sees them after its directory links (``/bin`` → ``/usr/bin`` on a merged-/usr system)."""

from __future__ import annotations

import posixpath
from pathlib import Path

from imageci.rootpath import listdir, read_text, resolve
from imageci.supply.apk import INSTALLED
from imageci.supply.rpm import query


class _Canon:
    """Paths made canonical by resolving their directory inside the image (cached per directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[str, str | None] = {}

    def __call__(self, path: str) -> str | None:
        directory, name = posixpath.split(path.strip("/"))
        if directory not in self.dirs:
            found = resolve(self.root, directory) if directory else self.root
            self.dirs[directory] = None if found is None else str(found.relative_to(self.root)).strip(".")
        base = self.dirs[directory]
        if base is None or not name:
            return None
        return f"{base}/{name}" if base else name


def _dpkg(root: Path, canon: _Canon, owners: dict[str, str]) -> None:
    for entry in listdir(root, "var/lib/dpkg/info"):
        if not entry.endswith(".list"):
            continue
        package = entry.removesuffix(".list").split(":")[0]
        for line in (read_text(root, f"var/lib/dpkg/info/{entry}") or "").splitlines():
            rel = canon(line)
            if rel is not None:
                owners.setdefault(rel, package)


def _apk(root: Path, canon: _Canon, owners: dict[str, str]) -> None:
    package, directory = "", ""
    for line in (read_text(root, INSTALLED, limit=256 << 20) or "").splitlines():
        if line.startswith("P:"):
            package = line[2:]
        elif line.startswith("F:"):
            directory = line[2:]
        elif line.startswith("R:") and package:
            rel = canon(f"{directory}/{line[2:]}")
            if rel is not None:
                owners.setdefault(rel, package)


def _rpm(root: Path, canon: _Canon, owners: dict[str, str]) -> None:
    answer = query(root, "[%{FILENAMES}\\t%{=NAME}\\n]")  # "=": the one NAME beside each file
    for line in (answer[1] if answer else "").splitlines():
        path, _, package = line.rpartition("\t")
        rel = canon(path)
        if rel is not None and package:
            owners.setdefault(rel, package)


def file_owners(root: Path) -> dict[str, str]:
    """Path relative to the root (canonical) → the name of the package that owns it."""
    canon = _Canon(root)
    owners: dict[str, str] = {}
    _dpkg(root, canon, owners)
    _apk(root, canon, owners)
    _rpm(root, canon, owners)
    return owners
