"""Paths inside an unpacked root file system, resolved the way the kernel would inside a chroot:
a link is followed relative to the image's root, never to this host's, and never out of the tree.
The testbeds copy files in and out through it; the BOM reads package databases through it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup


class PathEscape(ValueError):
    pass


def resolve_parts(path: str, link_of: Callable[[str], str | None], *, follow_last: bool = True) -> list[str]:
    """``path`` resolved the way the kernel would inside a chroot, as the names from the root down;
    ``link_of(rel)`` is the target of the link at ``rel`` ("a/b"), None where there is none. Absolute
    links are re-rooted, ``..`` stops at the root; a missing part is kept as a name. Raises
    :class:`PathEscape` on a link loop."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        target = link_of("/".join([*resolved, part])) if (parts or follow_last) else None
        if target is not None:
            hops += 1
            if hops > MAX_LINKS:
                raise PathEscape(f"too many levels of symbolic links in {path!r}")
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return resolved


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """``path`` inside the unpacked tree ``root`` (see :func:`resolve_parts`)."""

    def link_of(rel: str) -> str | None:
        candidate = root / rel
        return os.readlink(candidate) if os.path.islink(candidate) else None

    return root.joinpath(*resolve_parts(path, link_of, follow_last=follow_last))


def tar_has_file(tarball: Path, path: str) -> bool:
    """Whether ``path`` is a regular file in the root file system tarball, its links followed inside the
    tarball (read from its headers alone: nothing is unpacked)."""
    import tarfile

    entries: dict[str, tarfile.TarInfo] = {}
    try:
        with tarfile.open(tarball) as tar:
            for info in tar:
                entries[os.path.normpath(info.name.lstrip("/")).removeprefix("./")] = info
    except (tarfile.TarError, OSError):
        return False

    def link_of(rel: str) -> str | None:
        info = entries.get(rel)
        return info.linkname if info is not None and info.issym() else None

    try:
        found = entries.get("/".join(resolve_parts(path, link_of)))
    except PathEscape:
        return False
    return found is not None and (found.isfile() or found.islnk())


def resolve(root: Path, rel: str) -> Path | None:
    """An existing ``rel`` inside ``root`` with every link on the way followed inside the tree (None:
    a part is missing or not a directory, or the links loop). The result contains no link, so
    opening it cannot leave the tree."""
    try:
        path = resolve_in_root(root, rel)
    except PathEscape:
        return None
    return path if os.path.lexists(path) else None


def read_text(root: Path, rel: str, limit: int = 16 << 20) -> str | None:
    """The text of a regular file inside the tree (None: absent or not a regular file); at most
    ``limit`` bytes are read."""
    path = resolve(root, rel)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        return fh.read(min(limit, st.st_size)).decode("utf-8", errors="replace")  # read(n) reserves n bytes


def listdir(root: Path, rel: str) -> list[str]:
    """The names in a directory inside the tree (empty: absent or not a directory)."""
    path = resolve(root, rel)
    if path is None or not path.is_dir():
        return []
    return sorted(os.listdir(path))


def os_release(root: Path) -> dict[str, str]:
    """The image's ``/etc/os-release`` (or ``/usr/lib/os-release``); empty when it has none."""
    for rel in ("etc/os-release", "usr/lib/os-release"):
        text = read_text(root, rel, limit=64 << 10)
        if text is None:
            continue
        fields: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().isidentifier():
                fields[key.strip()] = value.strip().strip("'\"")
        return fields
    return {}
