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
import os
import tarfile
import tempfile
from pathlib import Path

from imageci.errors import UsageError
from imageci.fs import safe_rmtree


class HostileArchiveError(UsageError):
    """The archive tried to escape its destination; nothing was kept."""


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _rootfs_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    root = os.path.realpath(dest)
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        raise HostileArchiveError(f"refusing archive: member {name!r} has an absolute path")
    if ".." in Path(name).parts:
        raise HostileArchiveError(f"refusing archive: member {name!r} contains '..'")
    # realpath follows symlinks that earlier members created: catches writes through them.
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(root, target):
        raise HostileArchiveError(f"refusing archive: member {name!r} resolves outside the destination")
    if member.islnk():
        link = member.linkname
        if os.path.isabs(link) or ".." in Path(link).parts:
            raise HostileArchiveError(f"refusing archive: hard link {name!r} -> {link!r} points outside")
        if not _inside(root, os.path.realpath(os.path.join(root, link))):
            raise HostileArchiveError(f"refusing archive: hard link {name!r} -> {link!r} points outside")
    if member.ischr() or member.isblk() or member.isfifo():
        return None
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return None
    return member


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into the empty directory ``dest`` or raise (and clean up)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter=_rootfs_filter, numeric_owner=True)
    except HostileArchiveError:
        safe_rmtree(dest)
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        safe_rmtree(dest)
        raise UsageError(f"cannot unpack {archive.name}: {exc}") from exc


def unpacked_rootfs(archive: Path, digest: str, cache_dir: Path) -> Path:
    """The unpacked tree for a rootfs blob, extracted once per digest and shared
    read-only (the sandbox overlays it). Concurrent callers wait on a lock."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / digest
    marker = cache_dir / f"{digest}.complete"  # outside the tree: the sandbox must not see it
    if marker.exists() and final.is_dir():
        return final
    with open(cache_dir / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and final.is_dir():
            return final
        safe_rmtree(final)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".unpack-{digest[:12]}-"))
        try:
            os.chmod(tmp, 0o755)
            safe_extract(archive, tmp)
            os.replace(tmp, final)
            marker.touch()
        except BaseException:
            safe_rmtree(tmp)
            raise
    return final
