"""Images for the bisection tests and benchmark: busybox with a dpkg database of many small packages
(each owns /usr/share/NAME/status, holding "ok VERSION", or "broken" in the version that breaks the
suite), their changelogs, and files outside package management."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from imagekit import busybox_rootfs, require_tool

APPLETS = ("sh", "cat", "grep", "echo", "test", "[", "true", "ls")
MTIME = 1760000000
BASE_DIRS = {".", "bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "run", "root"}  # busybox_rootfs's own
# The suite the corpus is tested with: each way to break it is one of the images' changes
WORKS = """#!/bin/sh
for f in /usr/share/*/status; do
  if grep -q broken "$f"; then echo "broken: $f" >&2; exit 1; fi
done
if [ "$(cat /usr/share/pair-a/status 2>/dev/null)" = "ok mode-new" ] && \\
   [ "$(cat /usr/share/pair-b/status 2>/dev/null)" = "ok impl-2" ]; then
  echo "pair-b's implementation 2 cannot run in pair-a's new mode" >&2; exit 1
fi
if grep -q bad /etc/app.conf 2>/dev/null; then echo "app.conf says bad" >&2; exit 1; fi
if grep -q broken /var/lib/dpkg/alternatives/app 2>/dev/null; then echo "the app alternative is broken" >&2; exit 1; fi
if [ -e /etc/flaky ] && [ $((RANDOM % 2)) -eq 1 ]; then echo "a coin came up tails" >&2; exit 1; fi
echo works
"""


@dataclass
class Pkg:
    version: str
    source: str = ""
    status: str = ""  # /usr/share/NAME/status's content (default "ok VERSION")
    news: list[str] = field(default_factory=list)  # its changelog's entries, newest last


def _changelog(name: str, source: str, versions: list[tuple[str, str]]) -> bytes:
    text = "".join(f"{source} ({v}) unstable; urgency=medium\n\n  * {what}\n\n -- Nobody <nobody@example.org>  "
                   f"Mon, 01 Dec 2025 12:00:0{i % 10} +0000\n\n"
                   for i, (v, what) in enumerate(reversed(versions)))
    return gzip.compress(text.encode(), mtime=0)


def _append(path: Path, dirs: set[str], members: dict[str, bytes]) -> Path:
    """Add ``dirs`` and the files ``members`` to the tarball at ``path``."""
    with tarfile.open(path, "a") as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for name, body in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(body), 0o644, MTIME
            tar.addfile(info, io.BytesIO(body))
    return path


def image(path: Path, packages: dict[str, Pkg], files: dict[str, bytes] | None = None) -> Path:
    """A busybox image whose dpkg database holds ``packages``; ``files``: more, owned by none."""
    busybox_rootfs(path, path.stem, APPLETS)
    status, members = [], dict(files or {})
    dirs = {"var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/info", "var/lib/dpkg/alternatives", "usr", "usr/share",
            "usr/share/doc"}
    for name, p in sorted(packages.items()):
        source = p.source or name
        status.append(f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\n"
                      f"Installed-Size: 1\nMaintainer: Nobody <nobody@example.org>\nArchitecture: amd64\n"
                      + (f"Source: {source}\n" if source != name else "")
                      + f"Version: {p.version}\nDescription: {name}\n")
        owned = {f"usr/share/{name}/status": (p.status or f"ok {p.version}").encode(),
                 f"usr/share/doc/{name}/changelog.Debian.gz": _changelog(name, source, [
                     ("1.0-1", "Initial release."), *((v, w) for v, w in zip(
                         [f"{p.version.split('-')[0]}-{i}" for i in range(1, len(p.news) + 1)], p.news,
                         strict=True) if p.news)])}
        dirs |= {f"usr/share/{name}", f"usr/share/doc/{name}"}
        members |= owned
        listing = ["/.", "/usr", "/usr/share", f"/usr/share/{name}", f"/usr/share/doc/{name}",
                   *(f"/{f}" for f in owned)]
        members[f"var/lib/dpkg/info/{name}.list"] = ("\n".join(listing) + "\n").encode()
        members[f"var/lib/dpkg/info/{name}.md5sums"] = "".join(
            f"{hashlib.md5(body).hexdigest()}  {f}\n" for f, body in owned.items()).encode()  # noqa: S324
    members["var/lib/dpkg/status"] = "\n".join(status).encode()
    return _append(path, dirs | {str(Path(f).parent) for f in members} - BASE_DIRS, members)


def many(n: int, version: str = "1.0-1", per_source: int = 4) -> dict[str, Pkg]:
    """``n`` packages, ``per_source`` to a source package."""
    return {f"pkg{i:03d}": Pkg(version, source=f"src{i // per_source:03d}") for i in range(n)}


def upgraded(base: dict[str, Pkg], breaks: str | None = None, version: str = "2.0-1") -> dict[str, Pkg]:
    """Every package of ``base`` upgraded to ``version``; ``breaks`` says "broken" in its status file."""
    return {name: Pkg(version, p.source, "broken" if name == breaks else "",
                      ["Break the status file." if name == breaks else "New upstream release."])
            for name, p in base.items()}


def apk_image(path: Path, packages: dict[str, Pkg]) -> Path:
    """A busybox image whose apk database (``lib/apk/db/installed``) holds ``packages``, each owning
    /usr/share/NAME/status."""
    busybox_rootfs(path, path.stem, APPLETS)
    blocks, members = [], {}
    for name, p in sorted(packages.items()):
        blocks.append(f"C:Q1{hashlib.sha1(name.encode()).hexdigest()[:26]}=\nP:{name}\nV:{p.version}\nA:x86_64\n"  # noqa: S324
                      f"S:1\nI:1\nT:{name}\nU:https://example.org\nL:MIT\no:{p.source or name}\n"
                      f"F:usr/share/{name}\nR:status\n")
        members[f"usr/share/{name}/status"] = (p.status or f"ok {p.version}").encode()
    members["lib/apk/db/installed"] = "\n".join(blocks).encode()
    dirs = {"lib", "lib/apk", "lib/apk/db", "usr", "usr/share", *(f"usr/share/{n}" for n in packages)}
    return _append(path, dirs, members)


def rpm_image(path: Path, packages: dict[str, Pkg]) -> Path:
    """A busybox image whose rpm database (sqlite, written by this host's rpm) holds ``packages``, each owning
    /usr/share/NAME/status: one spec whose subpackages they are, built with rpmbuild (every package has the
    spec's version: the first one's)."""
    require_tool(shutil.which("rpmbuild") is not None and shutil.which("rpm") is not None, "rpm")
    version, release = next(iter(packages.values())).version.split("-")
    spec = [f"Name: corpus\nVersion: {version}\nRelease: {release}\nSummary: corpus\nLicense: MIT\nBuildArch: noarch\n"
            "%global debug_package %{nil}\n%define __os_install_post %{nil}\n%description\ncorpus\n"]
    install = ["%install"]
    for name, p in sorted(packages.items()):
        spec.append(f"%package -n {name}\nSummary: {name}\n%description -n {name}\n{name}\n")
        install.append(f"mkdir -p %{{buildroot}}/usr/share/{name}\n"
                       f"printf '%s' '{p.status or f'ok {p.version}'}' > %{{buildroot}}/usr/share/{name}/status")
    files = [f"%files -n {name}\n/usr/share/{name}\n" for name in sorted(packages)]
    top = Path(tempfile.mkdtemp(prefix="imageci-rpmcorpus-"))  # rpmbuild wants a path without spaces
    try:
        (top / "corpus.spec").write_text("\n".join([*spec, *install, "", *files]))
        built = subprocess.run(["rpmbuild", "-bb", "--define", f"_topdir {top}", str(top / "corpus.spec")],
                               capture_output=True, text=True)
        assert built.returncode == 0, built.stderr[-2000:]
        root = top / "root"
        done = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "--nodeps", "--noscripts",
                               "-i", *map(str, sorted((top / "RPMS").rglob("*.rpm")))], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        busybox_rootfs(path, path.stem, APPLETS)
        with tarfile.open(path, "a") as tar:
            for top_dir in ("usr", "var"):
                tar.add(root / top_dir, arcname=top_dir, filter=lambda i: None if i.name.endswith(".rpm.lock") else i)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return path
