"""Unpacking rootfs tarballs without trusting them.

A tarball that tries to write outside the destination (``..`` components,
absolute member names, hard links to outside files, writes through a symlink
that points outside) is refused with HostileArchiveError and the partial
extraction is removed. Ownership and modes (setuid included) are kept, since a
root filesystem needs them; device nodes and FIFOs are skipped, the sandbox
provides its own /dev.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO

from imageci import cacheuse
from imageci.errors import UsageError
from imageci.formats.treemanifest import TreeProblem, quick_check, record_of, write_manifest
from imageci.fs import safe_rmtree


class HostileArchiveError(UsageError):
    """The archive tried to escape its destination; nothing was kept."""


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _through_link(links: set[str], name: str) -> bool:
    """Whether ``name`` or a directory above it is a symlink the archive made (``links``)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return any("/".join(parts[:i]) in links for i in range(1, len(parts) + 1))


def _refuse_names(member: tarfile.TarInfo) -> None:
    """Refuse a member whose name (or hard link target) is absolute or climbs with ``..``."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise HostileArchiveError(f"refusing archive: member {name!r} has an absolute path")
    if ".." in Path(name).parts:
        raise HostileArchiveError(f"refusing archive: member {name!r} contains '..'")
    if member.islnk() and (os.path.isabs(member.linkname) or ".." in Path(member.linkname).parts):
        raise HostileArchiveError(f"refusing archive: hard link {name!r} -> {member.linkname!r} points outside")


def _normal(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _rootfs_filter(member: tarfile.TarInfo, dest: str, links: set[str] | None = None) -> tarfile.TarInfo | None:
    """``links``: the symlinks the archive has made so far in the (empty at first) destination. A path
    that passes through none of them cannot leave the destination, so only the others are resolved
    (realpath costs a lstat per component: most of the checking time of a large tree). None: resolve
    every path."""
    root = os.path.realpath(dest)
    name = member.name
    _refuse_names(member)
    # realpath follows symlinks that earlier members created: catches writes through them.
    if links is None or _through_link(links, name):
        target = os.path.realpath(os.path.join(root, name))
        if not _inside(root, target):
            raise HostileArchiveError(f"refusing archive: member {name!r} resolves outside the destination")
    if member.islnk():
        link = member.linkname
        if (links is None or _through_link(links, link)) and not _inside(
                root, os.path.realpath(os.path.join(root, link))):
            raise HostileArchiveError(f"refusing archive: hard link {name!r} -> {link!r} points outside")
    if links is not None and member.issym():
        links.add(_normal(name))
    if member.ischr() or member.isblk() or member.isfifo():
        return None
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return None
    return member


def _plain_plan(fh: IO[bytes]) -> list[str] | None:
    """For GNU tar: the members of the uncompressed tarball ``fh`` to leave out (device nodes, FIFOs),
    after the same refusals as ``_rootfs_filter``; None where only the careful path may unpack it (a
    compressed archive, a member written through or linked across one of its own symlinks, another
    member type, or a name an exclusion would not match exactly)."""
    head = fh.read(512)
    fh.seek(0)
    if len(head) < 512 or head[257:262] != b"ustar":
        return None
    links: set[str] = set()
    skipped: list[str] = []
    kept = [""]  # names (normalized) tar writes, and the hard links' targets
    with tarfile.open(fileobj=fh, mode="r:") as tar:
        for member in tar:
            _refuse_names(member)
            if _through_link(links, member.name) or (member.islnk() and _through_link(links, member.linkname)):
                return None
            if member.ischr() or member.isblk() or member.isfifo():
                skipped.append(member.name)
                continue
            if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
                return None
            kept.append(_normal(member.name))
            if member.islnk():
                kept.append(_normal(member.linkname))
            if member.issym():
                links.add(kept[-1])
    if not skipped:
        return skipped
    gone = {_normal(name) for name in skipped}  # an exclusion leaves out the name and all below it
    if any("\n" in name or "\\" in name for name in skipped) or any(
            "/".join(parts[:i]) in gone for parts in (name.split("/") for name in kept)
            for i in range(1, len(parts) + 1)):
        return None
    return skipped


@cache
def _gnu_tar_present() -> bool:
    try:
        said = subprocess.run(["tar", "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return False
    return said.startswith("tar (GNU tar)")


def _gnu_tar(fh: IO[bytes], dest: Path, skipped: list[str]) -> None:
    """Unpack the checked tarball ``fh`` (the file already open: what was checked is what is unpacked)
    into ``dest`` with GNU tar, leaving out ``skipped``; owners kept where we are root, modes always."""
    with tempfile.NamedTemporaryFile("w", suffix=".exclude") as exclude:
        exclude.write("".join(f"{name}\n" for name in skipped))
        exclude.flush()
        done = subprocess.run(["tar", "-x", "-f", "-", "-C", str(dest), "--numeric-owner", "--same-permissions",
                               "--delay-directory-restore", "--no-wildcards", "--anchored", "-X", exclude.name],
                              stdin=fh, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(f"tar: {done.stderr.strip()[-500:]}")


@contextmanager
def _or_nothing(archive: Path, dest: Path) -> Iterator[None]:
    """What goes wrong while unpacking ``archive`` leaves nothing in ``dest``: a hostile archive is refused as
    such, a damaged one (or a failing disk) with what was wrong."""
    try:
        yield
    except HostileArchiveError:
        safe_rmtree(dest)
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        safe_rmtree(dest)
        raise UsageError(f"cannot unpack {archive.name}: {exc}") from exc


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into the empty directory ``dest`` or raise (and clean up). A plain tarball
    whose members check out without the tree (the usual root filesystem) is unpacked by GNU tar, at a
    third of Python's CPU; any other by Python, resolving each path as it goes."""
    dest.mkdir(parents=True, exist_ok=True)
    links: set[str] | None = set() if not any(dest.iterdir()) else None  # empty: track the archive's links
    if links is not None and _gnu_tar_present():
        with _or_nothing(archive, dest), archive.open("rb", buffering=0) as fh:  # tar reads the fd's own offset
            skipped = _plain_plan(fh)
            if skipped is not None:
                fh.seek(0)
                _gnu_tar(fh, dest, skipped)
                return
    symlinks: list[tarfile.TarInfo] = []

    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        kept = _rootfs_filter(member, path, links)
        if kept is not None and kept.issym():
            symlinks.append(kept)
        return kept

    with _or_nothing(archive, dest):
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter=check, numeric_owner=True)
        for link in symlinks:  # tarfile dates every entry but links: the tree is then the archive's, to the second
            path = os.path.join(dest, link.name)
            if os.path.islink(path):
                os.utime(path, (link.mtime, link.mtime), follow_symlinks=False)


# ---- the unpacked cache: tamper-evident (formats.treemanifest) -------------------------------

_checked: set[tuple[Path, str]] = set()
_checked_lock = threading.Lock()
log = logging.getLogger("imageci")


def compare_with_archive(archive: Path, root: Path) -> list[TreeProblem]:
    """Every entry of the unpacked tree against the tarball itself: type, mode, owner, content,
    link target; entries the tree has and the tarball does not (what `imageci verify` runs)."""
    problems: list[TreeProblem] = []
    seen = {""}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            rel = os.path.normpath(member.name)
            rel = "" if rel == "." else rel
            if member.ischr() or member.isblk() or member.isfifo() or not (
                    member.isfile() or member.isdir() or member.issym() or member.islnk()):
                continue
            seen.add(rel)
            path = root / rel
            try:
                st = os.lstat(path)
            except OSError:
                problems.append(TreeProblem(rel, "missing"))
                continue
            if member.issym():
                if not stat.S_ISLNK(st.st_mode) or os.readlink(path) != member.linkname:
                    problems.append(TreeProblem(rel, "symlink changed"))
                continue
            if not member.islnk() and ((st.st_uid, st.st_gid) != (member.uid, member.gid)
                                       or stat.S_IMODE(st.st_mode) != member.mode):
                problems.append(TreeProblem(rel, "owner or mode changed"))
            if member.isdir():
                if not stat.S_ISDIR(st.st_mode):
                    problems.append(TreeProblem(rel, "no longer a directory"))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(TreeProblem(rel, "no longer a regular file"))
                continue
            source = tar.extractfile(member)  # a hard link reads as its target's content
            if source is None or (member.isfile() and st.st_size != member.size) or \
                    _sha256(source) != _sha256_path(path):
                problems.append(TreeProblem(rel, "content changed"))
    extra = sorted(set(record_of(root)) - seen)
    problems += [TreeProblem(rel, "added") for rel in extra]
    return problems


def _sha256(fh: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := fh.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _sha256_path(path: Path) -> str:
    with path.open("rb") as fh:
        return _sha256(fh)


def unpacked_rootfs(archive: Path, digest: str, cache_dir: Path) -> Path:
    """The unpacked tree for a rootfs blob, extracted once per digest and shared
    read-only (the sandbox overlays it). Concurrent callers wait on a lock. A tree
    that changed since it was unpacked is unpacked again, with a warning."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / digest
    marker = cache_dir / f"{digest}.complete"  # outside the tree: the sandbox must not see it
    manifest = cache_dir / f"{digest}.manifest"
    key = (cache_dir.resolve(), digest)
    with _checked_lock:
        if key in _checked and marker.exists():
            return final
    with open(cache_dir / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and final.is_dir():
            problems = quick_check(final, manifest, ctime=not (cache_dir / f"{digest}.synthesized").exists())
            cacheuse.touch(marker)  # used now (trimming removes the least recently used first)
            if not problems:
                with _checked_lock:
                    _checked.add(key)
                return final
            shown = "; ".join(str(p) for p in problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3
                                                                else "")
            log.warning(f"the unpacked rootfs of sha256:{digest[:12]} in {cache_dir} was modified ({shown}); "
                        "unpacking it again from the verified blob")
        discard_unpacked(cache_dir, digest)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".unpack-{digest[:12]}-"))
        try:
            os.chmod(tmp, 0o755)
            safe_extract(archive, tmp)
            os.replace(tmp, final)
            write_manifest(final, manifest)
            marker.touch()
        except BaseException:
            safe_rmtree(tmp)
            raise
        with _checked_lock:
            _checked.add(key)
    return final


def discard_unpacked(cache_dir: Path, digest: str) -> None:
    """Remove an unpacked tree (it is only a cache: the next use unpacks the blob again)."""
    (cache_dir / f"{digest}.complete").unlink(missing_ok=True)
    (cache_dir / f"{digest}.manifest").unlink(missing_ok=True)
    (cache_dir / f"{digest}.synthesized").unlink(missing_ok=True)  # a bisection's: made again when needed
    (cache_dir / f"{digest}.init").unlink(missing_ok=True)  # what testbeds.imageinit read from it
    safe_rmtree(cache_dir / digest)
    with _checked_lock:
        _checked.discard((cache_dir.resolve(), digest))
