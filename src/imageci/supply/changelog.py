"""A Debian package's changelog entries between two of its versions, read from an unpacked tree
(``usr/share/doc/PACKAGE/changelog.Debian.gz``, or ``changelog.gz`` for a native package), its paths
resolved inside the tree."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from debian.changelog import Changelog, ChangelogParseError
from debian.debian_support import Version as DebVersion

from imageci.rootpath import PathEscape, resolve_in_root

MAX_BYTES = 4 << 20  # a changelog larger than this (uncompressed) is read this far
NAMES = ("changelog.Debian.gz", "changelog.gz")


def _text(tree: Path, package: str) -> str | None:
    for name in NAMES:
        try:
            path = resolve_in_root(tree, f"usr/share/doc/{package}/{name}")
        except PathEscape:
            return None
        if path.is_file():
            try:
                with gzip.open(path, "rb") as fh:
                    return fh.read(MAX_BYTES).decode("utf-8", "replace")
            except (OSError, EOFError, zlib.error):
                return None
    return None


def entries_between(tree: Path, package: str, before: str | None, after: str | None, limit: int = 10) -> list[str]:
    """The entries newer than ``before`` and up to ``after`` (newest first), each as ``VERSION (DATE):``
    followed by its change lines; at most ``limit``. Empty when the tree has no readable changelog."""
    text = _text(tree, package)
    if text is None:
        return []
    try:
        log = Changelog(text, max_blocks=200, strict=False)
    except ChangelogParseError:
        return []
    out = []
    for block in log:
        version = DebVersion(str(block.version))
        if after is not None and version > DebVersion(after):
            continue
        if before is not None and version <= DebVersion(before):
            break
        lines = [ln.rstrip() for ln in block.changes() if ln.strip()]
        out.append("\n".join([f"{block.version} ({block.date or 'no date'}):", *lines]))
        if len(out) >= limit:
            break
    return out
