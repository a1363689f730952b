"""RPM packages from an image's rpm database, read with this host's ``rpm`` tool. The database is
found by resolving its path inside the image (a link in it cannot point rpm at this host's) and
copied to a temporary directory first: rpm takes locks and writes journals next to a database it
reads, and the image's tree is never written. Nothing in the image runs."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from imageci.rootpath import resolve
from imageci.supply.packages import Distro, Package, purl
from imageci.supply.records import DamagedDatabase

DBPATHS = ("usr/lib/sysimage/rpm", "var/lib/rpm")
DB_FILES = ("rpmdb.sqlite", "Packages.db", "Packages")  # sqlite (rpm ≥ 4.16), ndb, Berkeley DB
FIELDS = ("NAME", "EPOCH", "VERSION", "RELEASE", "ARCH", "SOURCERPM", "LICENSE")
QUERY = "\\t".join(f"%{{{f}}}" for f in FIELDS) + "\\n"


def _database(root: Path) -> tuple[str, Path] | None:
    for rel in DBPATHS:
        path = resolve(root, rel)
        if path is not None and path.is_dir() and any((path / f).is_file() for f in DB_FILES):
            return rel, path
    return None


def query(root: Path, query_format: str) -> tuple[str, str] | None:
    """rpm's answer to ``-qa --qf QUERY_FORMAT`` on the image's database, with the database's path
    (None: the image has none, or this host has no rpm tool)."""
    found = _database(root)
    if found is None or shutil.which("rpm") is None:
        return None
    rel, dbpath = found
    with tempfile.TemporaryDirectory(prefix="imageci-rpmdb-") as tmp:
        copy = Path(tmp) / "rpm"
        shutil.copytree(dbpath, copy, symlinks=True, ignore=shutil.ignore_patterns(".rpm.lock"))
        done = subprocess.run(["rpm", "--dbpath", str(copy), "-qa", "--qf", query_format], capture_output=True,
                              text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"})
    if done.returncode != 0:
        raise DamagedDatabase(f"/{rel}: rpm cannot read this database: {done.stderr.strip()[-300:]}")
    return rel, done.stdout


def rpm_packages(root: Path, distro: Distro | None) -> tuple[list[Package] | None, list[str]]:
    """The installed rpm packages (None: no rpm database) and warnings (a database this host's rpm
    tool cannot read is reported, not guessed at)."""
    found = _database(root)
    if found is None:
        return None, []
    if shutil.which("rpm") is None:
        return None, [f"/{found[0]}: an rpm database, not read: the rpm tool is not installed (apt-get install rpm)"]
    answer = query(root, QUERY)
    assert answer is not None
    rel, stdout = answer
    packages = []
    for number, line in enumerate(stdout.splitlines(), 1):
        values = line.split("\t")
        if len(values) != len(FIELDS):
            raise DamagedDatabase(f"/{rel}: rpm's answer, line {number}, has {len(values)} fields: {line[:80]!r}")
        name, epoch, version, release, arch, srpm, license_ = (v if v != "(none)" else "" for v in values)
        if name == "gpg-pubkey":  # the keys rpm keeps in its database are not packages
            continue
        full = f"{version}-{release}" if release else version
        source = srpm.removesuffix(".src.rpm").removesuffix(".nosrc.rpm")
        packages.append(Package(type="rpm", name=name, version=f"{epoch}:{full}" if epoch else full, arch=arch,
                                source=source.rsplit("-", 2)[0] if source.count("-") >= 2 else source,
                                source_version=full, licenses=[license_] if license_ else [], found_in=f"/{rel}",
                                purl=purl("rpm", distro.id if distro else "", name, full, arch=arch, epoch=epoch,
                                          distro=distro.qualifier() if distro else "", upstream=srpm)))
    packages.sort(key=lambda p: (p.name, p.arch))
    return packages, []
