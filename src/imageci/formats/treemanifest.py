"""An unpacked tree's manifest: what makes the cache of unpacked rootfs trees tamper-evident.

Each tree ``rootfs/<digest>/`` has a manifest ``rootfs/<digest>.manifest`` (outside the tree, so no
test sees it) recording every entry's inode, type, mode, owner, size, mtime and ctime right after
extraction. Any change to the tree (content, metadata, a file added or removed) changes a ctime or
the set of entries, which no one can set back: the cheap check at first use in a process compares
the tree to its manifest, and a changed tree is unpacked again from the verified blob, never tested.
`imageci verify` goes further and compares every entry's content with the blob itself.

The manifest's first line holds two digests of the whole record (with and without ctimes), its rest the
record itself (JSON: entry → metadata). The check walks the tree once into a digest: the same digest
means the same record, and only a tree that differs reads the record to say which entries changed.
A manifest without the line (written before it had one) is compared entry by entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from array import array
from dataclasses import dataclass
from pathlib import Path

from imageci.fs import walk

DIGESTS = b"#digests "  # the first line: b"#digests WITH-CTIME WITHOUT-CTIME\n"


@dataclass(frozen=True)
class TreeProblem:
    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path or '/'}: {self.what}"


def _stat_row(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_mode, st.st_uid, st.st_gid, 0 if stat.S_ISDIR(st.st_mode) else st.st_size,
            st.st_mtime_ns, st.st_ctime_ns]


def record_of(root: Path) -> dict[str, list[int]]:
    """Every entry below ``root`` (``""`` is root itself) → its recorded metadata."""
    found = {"": _stat_row(os.lstat(root))}
    for sub, _fd, _name, st in walk(root):
        found[sub] = _stat_row(st)
    return found


def tree_digest(root: Path, *, ctime: bool = True) -> str:
    """One digest of what :func:`record_of` records, in the walk's order (``ctime=False``: ctimes left out),
    without building the record: the fast check's whole work."""
    top = os.lstat(root)
    names = [""]
    ids = array("Q", (top.st_ino, top.st_mode, top.st_uid, top.st_gid, 0))  # (no size for a directory)
    times = array("q", (top.st_mtime_ns, top.st_ctime_ns if ctime else 0))
    for sub, _fd, _name, st in walk(root):
        names.append(sub)
        ids.extend((st.st_ino, st.st_mode, st.st_uid, st.st_gid, 0 if stat.S_ISDIR(st.st_mode) else st.st_size))
        times.extend((st.st_mtime_ns, st.st_ctime_ns if ctime else 0))
    h = hashlib.sha256(ids.tobytes())
    h.update(times.tobytes())
    h.update("\0".join(names).encode("utf-8", "surrogateescape"))  # (no name holds a NUL)
    return h.hexdigest()


def write_manifest(root: Path, manifest: Path) -> None:
    record = json.dumps(record_of(root), separators=(",", ":"), sort_keys=True).encode()
    line = DIGESTS + f"{tree_digest(root)} {tree_digest(root, ctime=False)}\n".encode()
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_bytes(line + record)
    os.replace(tmp, manifest)


def quick_check(root: Path, manifest: Path, *, ctime: bool = True) -> list[TreeProblem]:
    """Entries whose metadata changed since extraction, and entries added or removed. ``ctime=False``:
    a change of ctime alone is not one (a tree of hard links shares its inodes with others, whose new
    links change it)."""
    try:
        with manifest.open("rb") as fh:
            first = fh.readline()
            if first.startswith(DIGESTS):
                digests = first[len(DIGESTS):].split()
                if len(digests) == 2 and digests[0 if ctime else 1].decode() == tree_digest(root, ctime=ctime):
                    return []
            else:
                fh.seek(0)
            recorded = json.loads(fh.read())
        if not isinstance(recorded, dict):
            raise ValueError("not a manifest")
    except (OSError, ValueError) as exc:
        return [TreeProblem("", f"its manifest is unreadable ({exc})")]
    now = record_of(root)
    if not ctime:
        now = {k: v[:-1] for k, v in now.items()}
        recorded = {k: v[:-1] for k, v in recorded.items() if isinstance(v, list)}
    if now == recorded:
        return []
    problems = [TreeProblem(rel, "removed") for rel in sorted(set(recorded) - set(now))]
    problems += [TreeProblem(rel, "added") for rel in sorted(set(now) - set(recorded))]
    problems += [TreeProblem(rel, "changed") for rel in sorted(set(now) & set(recorded)) if now[rel] != recorded[rel]]
    return problems
