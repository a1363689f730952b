"""A directory stored as one blob: a test suite travels with its version.

``pack_tree`` writes a deterministic tar (sorted names, owner 0, mtime 0;
files, directories and relative symlinks that stay inside the tree), so the
same suite content gives the same digest. ``unpack_tree`` extracts such a
blob into a cache directory once, refusing any member that would land
outside it, and publishes the result with a rename: a reader sees a whole
snapshot or none.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from imageci import cacheuse
from imageci.errors import ImageciError, UsageError
from imageci.exitcodes import ExitCode
from imageci.fs import safe_rmtree
from imageci.store.blobs import Blob, BlobStore


class DamagedSnapshotError(ImageciError):
    """A stored snapshot that is not what imageci writes (hostile or damaged): refused, nothing extracted."""

    exit_code = ExitCode.STORE_CORRUPT


def _inside(root: Path, link: Path) -> bool:
    target = (link.parent / os.readlink(link)).resolve()
    return target == root or root in target.parents


def pack_tree(root: Path, store: BlobStore) -> Blob:
    """Store the tree under ``root`` as a tar blob. A symlink that leads out of the tree is refused:
    the snapshot would not mean the same thing elsewhere."""
    root = root.resolve()
    entries = sorted(p for p in root.rglob("*") if "__pycache__" not in p.parts and p.suffix != ".pyc")
    fd, name = tempfile.mkstemp(dir=store.tmp, prefix=store.tmp_prefix + "snapshot-")
    os.close(fd)
    tmp = Path(name)
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in entries:
                rel = path.relative_to(root).as_posix()
                if path.is_symlink():
                    if not _inside(root, path):
                        raise UsageError(f"{path}: a symlink out of the suite ({os.readlink(path)}); a stored "
                                         "suite must be self-contained")
                elif not (path.is_file() or path.is_dir()):
                    continue  # sockets, fifos: not test content
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                info.mode = 0o755 if info.isdir() or (info.mode & 0o111) else 0o644
                if info.isfile():
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        return store.move_file(tmp)
    finally:
        tmp.unlink(missing_ok=True)


def _check_member(member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not member.name:
        raise DamagedSnapshotError(f"snapshot member {member.name!r} would land outside its directory")
    if member.issym():
        landed = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))
        if member.linkname.startswith("/") or landed == ".." or landed.startswith("../"):
            raise DamagedSnapshotError(f"snapshot symlink {member.name!r} → {member.linkname!r} leaves its directory")
    elif not (member.isfile() or member.isdir()):
        raise DamagedSnapshotError(f"snapshot member {member.name!r} is not a file, directory or symlink")


def unpack_tree(store: BlobStore, digest: str, cache: Path) -> Path:
    """The snapshot ``digest`` as a directory under ``cache`` (extracted once, verified first)."""
    dest = cache / digest
    if dest.is_dir():
        cacheuse.touch(dest)  # used now (trimming removes the least recently used first)
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    blob = store.verified_path(digest)
    work = Path(tempfile.mkdtemp(dir=cache, prefix=f".{digest[:12]}-"))
    try:
        try:
            with tarfile.open(blob, "r:") as tar:
                members = tar.getmembers()
                for member in members:
                    _check_member(member)
                for member in members:
                    target = work / member.name
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                    elif member.issym():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.symlink_to(member.linkname)
                    else:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        src = tar.extractfile(member)
                        assert src is not None
                        with src, target.open("wb") as out:
                            while chunk := src.read(1 << 20):
                                out.write(chunk)
                        target.chmod(0o755 if member.mode & 0o111 else 0o644)
        except tarfile.TarError as exc:
            raise DamagedSnapshotError(f"stored snapshot sha256:{digest} is not a readable tar: {exc}") from None
        try:
            work.rename(dest)
        except OSError:
            if not dest.is_dir():  # someone else published it first otherwise
                raise
        return dest
    finally:
        if work.exists():
            safe_rmtree(work)
