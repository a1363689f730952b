"""Resolve a path inside an unpacked root filesystem the way the kernel would
inside a chroot: absolute symlinks are re-rooted, ``..`` stops at the root.
Used to copy files in and out without ever following an image's symlink onto
the host."""

from __future__ import annotations

import os
from pathlib import Path

MAX_LINKS = 40


class PathEscape(ValueError):
    pass


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
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
