"""Intermediate images for bisection, made from two unpacked trees without the network and without
a rebuild: the good tree with some of the changes to the bad tree taken from it — a package's files,
modes and owners, and its entries in its package manager's database (dpkg: ``info/PKG.*`` — ``list``,
``md5sums``, ``conffiles``, … — and its ``status`` record; apk: its block of ``lib/apk/db/installed``,
whose ``F:``/``R:`` lines list its files; rpm: its header row in ``rpmdb.sqlite``, ``build.rpmdb``); or
the files changed outside package management.

Maintainer scripts are not replayed (an intermediate is what dpkg would have unpacked, not what it
would have configured), so a bisection first checks that the good tree with *every* change fails as
the bad image does.

The new tree is a farm of hard links into the two trees (nothing is copied; the trees are read-only
caches the sandbox overlays), made while holding each tree's lock, whose manifest is then written
again (a link changes its files' ctime). A path is always resolved inside the tree it names, its
links followed as the image's own root would (``rootpath``): nothing outside either tree is read or
written."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageci.build import rpmdb
from imageci.errors import UsageError
from imageci.formats.treemanifest import write_manifest
from imageci.fs import safe_rmtree
from imageci.rootpath import PathEscape, resolve_in_root
from imageci.supply.records import paragraphs

STATUS = "var/lib/dpkg/status"
APK_INSTALLED = "lib/apk/db/installed"
INFO = "var/lib/dpkg/info"
SYNTH_VERSION = 1  # raised whenever the same inputs would give another tree


class CannotSynthesize(UsageError):
    """The trees cannot be combined here (a package database this does not edit, a damaged one)."""


@dataclass(frozen=True)
class Move:
    """One candidate change: a package (added, removed, upgraded or downgraded), or every file changed
    outside package management (``files``)."""

    key: str  # deb:NAME:ARCH, or "files"
    name: str = ""
    arch: str = ""
    before: str | None = None
    after: str | None = None
    source: str = ""  # its source package: the group it moves with first
    paths: tuple[str, ...] = field(default=(), compare=False)  # for "files": the changed paths

    def as_dict(self) -> dict[str, Any]:
        """As a job carries it (``engine.jobs.Intermediate``)."""
        return {**dataclasses.asdict(self), "paths": list(self.paths)}

    @classmethod
    def of(cls, given: dict[str, Any]) -> Move:
        """A move a job carried; a refusal (not a traceback) for a malformed one."""
        try:
            return cls(**{**given, "paths": tuple(str(p) for p in given.get("paths", ()))})
        except TypeError as exc:
            raise CannotSynthesize(f"a malformed change in the job: {exc}") from None

    def describe(self) -> str:
        if self.key == "files":
            return f"{len(self.paths)} file(s) changed outside package management"
        return f"{self.name} {self.before or '(absent)'} → {self.after or '(removed)'}"


def recipe(good: str, bad: str, moves: Sequence[Move]) -> str:
    """The intermediate's digest: what it is made of (the two trees' digests and the moves)."""
    text = "\n".join([f"v{SYNTH_VERSION}", good, bad, *sorted(m.key for m in moves)])
    return hashlib.sha256(text.encode()).hexdigest()


@contextmanager
def _locked(cache: Path, digests: Sequence[str]) -> Iterator[None]:
    """Each tree's lock (``formats.rootfs.unpacked_rootfs``'s), in a fixed order."""
    with ExitStack() as stack:
        for digest in sorted(set(digests)):
            fh = stack.enter_context(open(cache / f"{digest}.lock", "w"))
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def synthesize(cache: Path, good: str, bad: str, moves: Sequence[Move]) -> Path:
    """The tree of good + ``moves`` taken from bad, in the rootfs cache (``cache/DIGEST``, marked complete
    with its manifest, as an unpacked rootfs): made once per recipe."""
    digest = recipe(good, bad, moves)
    final, marker = cache / digest, cache / f"{digest}.complete"
    if marker.exists() and final.is_dir():
        return final
    with _locked(cache, [good, bad, digest]):
        if marker.exists() and final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".synth-{digest[:12]}-"))
        try:
            subprocess.run(["cp", "-a", "-l", f"{cache / good}/.", str(tmp)], check=True, capture_output=True)
            _apply(tmp, cache / good, cache / bad, moves)
            os.replace(tmp, final)
        except (OSError, subprocess.CalledProcessError) as exc:
            safe_rmtree(tmp)
            raise CannotSynthesize(f"the intermediate image could not be made: {exc}") from exc
        except BaseException:
            safe_rmtree(tmp)
            raise
        for d in (good, bad, digest):  # a link changed ctimes: each tree's manifest says what it is now
            write_manifest(cache / d, cache / f"{d}.manifest")
        (cache / f"{digest}.synthesized").write_text(f"made by bisection from {good} and {bad}; not a tarball\n")
        marker.touch()
    return final


def _apply(out: Path, good: Path, bad: Path, moves: Sequence[Move]) -> None:
    debs = [m for m in moves if m.key.startswith("deb:")]
    apks = [m for m in moves if m.key.startswith("apk:")]
    rpms = [m for m in moves if m.key.startswith("rpm:")]
    if debs:
        _status(out, good, bad, debs)
    if apks:
        _apk_installed(out, good, bad, apks)
    owned = (rpmdb.owned_files(good), rpmdb.owned_files(bad)) if rpms else ({}, {})
    for m in [*debs, *apks, *rpms]:
        if m in debs:
            before, after = _listed(good, m), _listed(bad, m)
        elif m in apks:
            before, after = _apk_files(good, m), _apk_files(bad, m)
        else:
            before, after = (o.get((m.name, m.arch), set()) for o in owned)
        for path in sorted(before - after, reverse=True):
            _remove(out, path)
        for path in sorted(after):
            _take(out, bad, path)
        if m not in debs:
            continue
        for info in _info_files(good, m):
            _remove(out, f"{INFO}/{info}")
        for info in _info_files(bad, m):
            _take(out, bad, f"{INFO}/{info}")
    if rpms:  # after the files: the database's own directory is the good one's until now
        rpmdb.transplant(out, good, bad, [(m.name, m.arch) for m in rpms])
    for m in moves:
        for path in m.paths:
            if _exists(bad, path):
                _take(out, bad, path)
            else:
                _remove(out, path)


def _names(m: Move) -> tuple[str, str]:
    return m.name, f"{m.name}:{m.arch}"


def _info_files(tree: Path, m: Move) -> list[str]:
    """dpkg's per-package files of ``m`` in ``tree`` (``NAME.*`` or ``NAME:ARCH.*``)."""
    info = tree / INFO
    if not info.is_dir() or info.is_symlink():
        return []
    plain, qualified = _names(m)
    return sorted(n for n in os.listdir(info) if n.rsplit(".", 1)[0] in (plain, qualified))


def _listed(tree: Path, m: Move) -> set[str]:
    """The paths dpkg lists for ``m`` in ``tree`` (empty when it is not installed there)."""
    for name in _names(m):
        listing = tree / INFO / f"{name}.list"
        if listing.is_file() and not listing.is_symlink():
            return {p for p in listing.read_text(errors="replace").splitlines() if p.strip() and p != "/."}
    return set()


def _resolve(root: Path, path: str) -> Path | None:
    try:
        return resolve_in_root(root, path, follow_last=False)
    except PathEscape:
        return None


def _exists(root: Path, path: str) -> bool:
    found = _resolve(root, path)
    return found is not None and os.path.lexists(found)


def _remove(out: Path, path: str) -> None:
    """Remove a file (never a directory: other packages may own what is in it)."""
    target = _resolve(out, path)
    if target is None or target == out or not os.path.lexists(target):
        return
    if stat.S_ISDIR(os.lstat(target).st_mode):
        return
    target.unlink()


def _take(out: Path, bad: Path, path: str) -> None:
    """Make ``path`` in ``out`` what it is in ``bad``: a directory made (its mode and owner), a link
    recreated, a regular file linked (never written through: the good tree's inode is unlinked first)."""
    source, target = _resolve(bad, path), _resolve(out, path)
    if source is None or target is None or target == out or not os.path.lexists(source):
        return
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        if not os.path.lexists(target):
            _parents(out, target)
            os.mkdir(target)
            os.chown(target, st.st_uid, st.st_gid)
            os.chmod(target, stat.S_IMODE(st.st_mode))
        return
    if os.path.lexists(target):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            return  # a directory here, a file there: left as it is
        target.unlink()
    _parents(out, target)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), target)
        os.lchown(target, st.st_uid, st.st_gid)
    elif stat.S_ISREG(st.st_mode):
        os.link(source, target)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def _parents(out: Path, target: Path) -> None:
    missing = []
    parent = target.parent
    while parent != out and not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        os.mkdir(d, 0o755)


def _status(out: Path, good: Path, bad: Path, moves: Sequence[Move]) -> None:
    """dpkg's status file: good's records, those of ``moves`` replaced by bad's (added, removed)."""
    records = {k: v for k, v in _records(good)}
    theirs = {k: v for k, v in _records(bad)}
    for m in moves:
        key = (m.name, m.arch)
        found = theirs.get(key) or theirs.get((m.name, ""))
        if found is None:
            records.pop(key, None)
            records.pop((m.name, ""), None)
        else:
            records[key] = found
    target = out / STATUS
    if target.is_symlink() or not target.is_file():
        raise CannotSynthesize(f"/{STATUS} is not a regular file in the good image")
    target.unlink()  # a link into the good tree: never written through
    target.write_text("\n".join(records.values()))
    st = os.lstat(good / STATUS)
    os.chmod(target, stat.S_IMODE(st.st_mode))


def _records(tree: Path) -> Iterator[tuple[tuple[str, str], str]]:
    path = tree / STATUS
    if path.is_symlink() or not path.is_file():
        raise CannotSynthesize(f"/{STATUS} is missing: only dpkg's database is edited here")
    text = path.read_text(errors="replace")
    for chunk in (c for c in text.split("\n\n") if c.strip()):
        record = next(iter(paragraphs(chunk + "\n", str(path))), None)
        if record is None:
            continue
        yield (record.get("Package"), record.get("Architecture")), chunk.strip("\n") + "\n"


def _apk_blocks(tree: Path) -> dict[str, str]:
    """apk's installed database: each package's block, by name (in the database's order)."""
    path = tree / APK_INSTALLED
    if path.is_symlink() or not path.is_file():
        raise CannotSynthesize(f"/{APK_INSTALLED} is missing: the image has no apk database to edit")
    blocks = {}
    for chunk in (c for c in path.read_text(errors="replace").split("\n\n") if c.strip()):
        name = next((ln[2:] for ln in chunk.splitlines() if ln.startswith("P:")), "")
        if name:
            blocks[name] = chunk.strip("\n") + "\n"
    return blocks


def _apk_files(tree: Path, m: Move) -> set[str]:
    """The paths apk lists for ``m`` in ``tree``: each ``R:`` file in the ``F:`` directory before it."""
    block = _apk_blocks(tree).get(m.name, "")
    out, folder = set(), ""
    for line in block.splitlines():
        if line.startswith("F:"):
            folder = line[2:]
            out.add(f"/{folder}")
        elif line.startswith("R:"):
            out.add(f"/{folder}/{line[2:]}" if folder else f"/{line[2:]}")
    return out


def _apk_installed(out: Path, good: Path, bad: Path, moves: Sequence[Move]) -> None:
    """apk's installed database: good's blocks, those of ``moves`` replaced by bad's (added, removed)."""
    blocks, theirs = _apk_blocks(good), _apk_blocks(bad)
    for m in moves:
        if m.name in theirs:
            blocks[m.name] = theirs[m.name]
        else:
            blocks.pop(m.name, None)
    target = out / APK_INSTALLED
    target.unlink()  # a link into the good tree: never written through
    target.write_text("\n".join(blocks.values()) + "\n")
