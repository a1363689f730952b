"""rpm's side of intermediate images (``build.intermediate``): which files each package owns, as the
image's own database says (read with this host's ``rpm`` on a copy, ``supply.rpm``), and the database of
the new tree — the good one with the moved packages' headers replaced by the bad one's (rows of
``rpmdb.sqlite``'s ``Packages`` table; read from the bad tree read-only), its indexes then rebuilt by
``rpmdb --rebuilddb``. Only rpm's sqlite database (rpm ≥ 4.16: Fedora 33+, RHEL 9) is edited; an image
with a Berkeley DB or ndb database is refused with that reason."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from imageci.errors import UsageError
from imageci.rootpath import PathEscape, resolve_in_root
from imageci.supply.records import DamagedDatabase
from imageci.supply.rpm import DBPATHS, query

SQLITE = "rpmdb.sqlite"
Key = tuple[str, str]  # (name, arch)
ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}


class CannotEditRpmdb(UsageError):
    """The image's rpm database cannot be edited here."""


def database_dir(root: Path) -> tuple[str, Path]:
    """The image's rpm database directory (its path in the image, resolved inside ``root``); refused
    unless it is rpm's sqlite database."""
    for rel in DBPATHS:
        try:
            path = resolve_in_root(root, rel)
        except PathEscape:
            continue
        if path.is_dir() and not path.is_symlink():
            if (path / SQLITE).is_file() and not (path / SQLITE).is_symlink():
                return rel, path
            if any((path / f).exists() for f in ("Packages", "Packages.db")):
                raise CannotEditRpmdb(f"/{rel} is a Berkeley DB or ndb rpm database: only rpm's sqlite database "
                                      "(rpm 4.16 and later) is edited to make intermediate images")
    raise CannotEditRpmdb("the image has no rpm database to edit")


def owned_files(root: Path) -> dict[Key, set[str]]:
    """Each installed package's files (absolute paths), as the image's database lists them."""
    answer = _query(root, "[%{=NAME}\\t%{=ARCH}\\t%{FILENAMES}\\n]")
    out: dict[Key, set[str]] = {}
    for line in answer.splitlines():
        name, arch, path = (line.split("\t", 2) + ["", ""])[:3]
        if path and path != "(none)":
            out.setdefault((name, arch), set()).add(path)
    return out


def _instances(root: Path) -> dict[Key, int]:
    """Each installed package's row in the database's ``Packages`` table."""
    out = {}
    for line in _query(root, "%{DBINSTANCE}\\t%{NAME}\\t%{ARCH}\\n").splitlines():
        number, name, arch = (line.split("\t") + ["", ""])[:3]
        if number.isdigit():
            out[(name, arch)] = int(number)
    return out


def _query(root: Path, fmt: str) -> str:
    answer = query(root, fmt)
    if answer is None:
        raise CannotEditRpmdb("the image has no rpm database, or this host has no rpm tool (apt-get install rpm)")
    return answer[1]


def transplant(out: Path, good: Path, bad: Path, keys: Sequence[Key]) -> None:
    """``out``'s rpm database (a copy of good's, linked into ``out``): the rows of ``keys`` replaced by bad's
    (added, removed), then its indexes rebuilt."""
    rel, _good_dir = database_dir(good)
    _bad_rel, bad_dir = database_dir(bad)
    target_dir = resolve_in_root(out, rel)
    mine, theirs = _instances(good), _instances(bad)
    for name in os.listdir(target_dir):  # links into the good tree: never written through
        path = target_dir / name
        if path.is_file() and not path.is_symlink():
            copy = path.with_name(f".{name}.copy")
            shutil.copy2(path, copy)
            os.replace(copy, path)
    source = sqlite3.connect(f"file:{urllib.parse.quote(str(bad_dir / SQLITE))}?mode=ro&immutable=1", uri=True)
    try:
        with sqlite3.connect(target_dir / SQLITE) as db:
            for key in keys:
                if key in mine:
                    db.execute("DELETE FROM Packages WHERE hnum = ?", (mine[key],))
                if key in theirs:
                    row = source.execute("SELECT blob FROM Packages WHERE hnum = ?", (theirs[key],)).fetchone()
                    if row is None:
                        raise DamagedDatabase(f"/{rel}/{SQLITE}: no header {theirs[key]} for {key[0]}")
                    db.execute("INSERT INTO Packages (blob) VALUES (?)", (row[0],))
    except sqlite3.Error as exc:
        raise CannotEditRpmdb(f"/{rel}/{SQLITE} could not be edited: {exc}") from None
    finally:
        source.close()
    _rebuild(target_dir, rel)


def _rebuild(target_dir: Path, rel: str) -> None:
    """``rpmdb --rebuilddb`` on the database in ``target_dir``: its indexes made from its headers."""
    with tempfile.TemporaryDirectory(prefix="imageci-rpmrebuild-") as tmp:
        work = Path(tmp) / "rpm"
        shutil.copytree(target_dir, work, symlinks=True)
        done = subprocess.run(["rpmdb", "--dbpath", str(work), "--rebuilddb"], capture_output=True, text=True,
                              timeout=600, env=ENV)
        if done.returncode != 0:
            raise CannotEditRpmdb(f"/{rel}: rpmdb --rebuilddb failed: {done.stderr.strip()[-300:]}")
        for path in target_dir.glob(f"{SQLITE}*"):  # the database and any journal of it
            path.unlink()
        for path in work.glob(f"{SQLITE}*"):
            shutil.copy2(path, target_dir / path.name)
