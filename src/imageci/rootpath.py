"""Paths inside an unpacked root file system, resolved the way the kernel would inside a chroot:
a link is followed relative to the image's root, never to this host's, and never out of the tree.
The testbeds copy files in and out through it; the BOM reads package databases through it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup


class PathEscape(ValueError):
    pass


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """``path`` inside ``root`` the way the kernel would resolve it inside a chroot: absolute links
    are re-rooted, ``..`` stops at the root; a missing part is kept as a name (a destination to
    create). Raises :class:`PathEscape` on a link loop."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if os.path.islink(candidate) and (parts or follow_last):
            hops += 1
            if hops > MAX_LINKS:
                raise PathEscape(f"too many levels of symbolic links in {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


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
