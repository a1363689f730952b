"""Flattening an OCI image's layers into one rootfs tarball, as a container
runtime would see the root filesystem.

Layers apply bottom to top. In layer *i*, ``DIR/.wh.NAME`` removes ``DIR/NAME``
(and all below it) from the layers under *i*; ``DIR/.wh..wh..opq`` (an opaque
directory) removes everything the layers under *i* had in ``DIR``, and keeps
what layer *i* itself puts there. A non-directory replacing a directory removes
the directory's contents. Whiteout entries never reach the output.

Two passes over the layers, each streamed (a 4 GB layer never sits in memory):
the first reads only headers and computes which entry wins at every path; the
second copies the winners, in layer order, into one PAX tarball. Both passes
check each layer against its digest (compressed) and diff id (uncompressed).
A hard link whose target a later layer replaced or removed becomes a regular
file with the content it had, so extraction never writes through a link.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from imageci.errors import UsageError
from imageci.formats.rootfs import HostileArchiveError

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
CHUNK = 1 << 20


class DamagedImageError(UsageError):
    """A layer does not match its digest, or is not a readable tar stream."""


@dataclass(frozen=True)
class Layer:
    path: Path  # the blob as stored (compressed or not)
    digest: str  # hex sha256 of the blob
    diff_id: str | None = None  # hex sha256 of the uncompressed tar (the config's rootfs.diff_ids)

    @property
    def label(self) -> str:
        return f"layer sha256:{self.digest[:12]}"


@dataclass(eq=False)
class _Entry:
    layer: int
    ordinal: int
    is_dir: bool
    path: str
    source: _Entry | None = None  # a hard link: the regular file whose content it shares


@dataclass
class _State:
    entries: dict[str, _Entry] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)

    def add(self, entry: _Entry) -> None:
        old = self.entries.get(entry.path)
        if old is not None and old.is_dir and not entry.is_dir:
            self.remove_below(entry.path)
        self.entries[entry.path] = entry
        if entry.path:
            self.children.setdefault(posixpath.dirname(entry.path), set()).add(entry.path)

    def remove(self, path: str) -> None:
        self.remove_below(path)
        self.entries.pop(path, None)
        self.children.get(posixpath.dirname(path), set()).discard(path)

    def remove_below(self, path: str) -> None:
        stack = [path]
        while stack:
            for child in self.children.pop(stack.pop(), ()):
                self.entries.pop(child, None)
                stack.append(child)


def normalize(name: str, where: str) -> str:
    """A member name as a path relative to the root ("" is the root itself), or a refusal."""
    if name.startswith("/"):
        raise HostileArchiveError(f"refusing image: {where}: member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileArchiveError(f"refusing image: {where}: member {name!r} contains '..'")
    return "/".join(parts)


class _Hashing(io.RawIOBase):
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes] | io.RawIOBase | io.BufferedIOBase) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.hash.update(data)
        return n

    def drain(self) -> str:
        while self.read(CHUNK):
            pass
        return self.hash.hexdigest()


@contextmanager
def _open_layer(layer: Layer) -> Iterator[tuple[tarfile.TarFile, _Hashing, _Hashing]]:
    """The layer as a tar stream, with the hashes of its blob and of its uncompressed bytes."""
    with layer.path.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        blob = _Hashing(fh)
        zstd: subprocess.Popen[bytes] | None = None
        plain: io.RawIOBase | io.BufferedIOBase
        if magic.startswith(GZIP_MAGIC):
            plain = gzip.GzipFile(fileobj=io.BufferedReader(blob, CHUNK), mode="rb")
        elif magic == ZSTD_MAGIC:
            if shutil.which("zstd") is None:
                raise UsageError(f"{layer.label} is zstd-compressed: install zstd")
            zstd = subprocess.Popen(["zstd", "-dcq"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            plain = _ZstdReader(zstd, blob)
        else:
            plain = io.BufferedReader(blob, CHUNK)
        tar_bytes = _Hashing(plain)
        try:
            with tarfile.open(fileobj=io.BufferedReader(tar_bytes, CHUNK), mode="r|") as tar:
                yield tar, blob, tar_bytes
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise DamagedImageError(f"{layer.label} is not a readable tar stream: {exc}") from None
        finally:
            if zstd is not None:
                zstd.kill()
                zstd.wait()


class _ZstdReader(io.RawIOBase):
    """zstd's output while a thread feeds it the blob (so both hashes see every byte)."""

    def __init__(self, proc: subprocess.Popen[bytes], blob: _Hashing) -> None:
        import threading

        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.out = proc.stdout

        def feed() -> None:
            assert proc.stdin is not None
            try:
                while chunk := blob.read(CHUNK):
                    proc.stdin.write(chunk)
            except (BrokenPipeError, ValueError):
                pass
            finally:
                with suppress(BrokenPipeError):
                    proc.stdin.close()

        self.feeder = threading.Thread(target=feed, daemon=True)
        self.feeder.start()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.out.read(len(buffer))
        buffer[: len(data)] = data
        if not data:
            self.feeder.join()
            if self.proc.wait() != 0:
                raise OSError("zstd could not decompress it")
        return len(data)


def _check(layer: Layer, blob: _Hashing, tar_bytes: _Hashing) -> None:
    diff_id = tar_bytes.drain()
    digest = blob.drain()
    if digest != layer.digest:
        raise DamagedImageError(f"{layer.label}: its bytes hash to sha256:{digest[:12]}, not the digest the "
                                "manifest names (damaged or altered)")
    if layer.diff_id is not None and diff_id != layer.diff_id:
        raise DamagedImageError(f"{layer.label}: its uncompressed bytes hash to sha256:{diff_id[:12]}, not the "
                                f"diff id sha256:{layer.diff_id[:12]} its config names")


def _plan(layers: Sequence[Layer]) -> _State:
    """Pass 1: the entry that wins at every path."""
    state = _State()
    for i, layer in enumerate(layers):
        removed: list[str] = []
        opaque: list[str] = []
        added: list[tuple[tarfile.TarInfo, _Entry]] = []
        with _open_layer(layer) as (tar, blob, tar_bytes):
            for ordinal, member in enumerate(tar):
                path = normalize(member.name, layer.label)
                base = posixpath.basename(path)
                if base == OPAQUE:
                    opaque.append(posixpath.dirname(path))
                elif base.startswith(WHITEOUT):
                    removed.append(posixpath.join(posixpath.dirname(path), base[len(WHITEOUT):]))
                else:
                    added.append((member, _Entry(i, ordinal, member.isdir(), path)))
            _check(layer, blob, tar_bytes)
        for directory in opaque:
            state.remove_below(directory)
        for path in removed:
            state.remove(path)
        for member, entry in added:
            if member.islnk():
                target = state.entries.get(normalize(member.linkname, layer.label))
                if target is None or target.is_dir:
                    raise DamagedImageError(f"{layer.label}: hard link {entry.path!r} -> {member.linkname!r}: "
                                            "no such file below it")
                entry.source = target.source or target
            state.add(entry)
    return state


def _copy(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name or ".")
    for attr in ("mode", "uid", "gid", "size", "mtime", "type", "linkname", "uname", "gname", "devmajor",
                 "devminor"):
        setattr(info, attr, getattr(member, attr))
    info.pax_headers = {k: v for k, v in member.pax_headers.items()
                        if k.startswith("SCHILY.xattr.") or k.startswith("LIBARCHIVE.xattr.")}
    return info


def _content(layers: Sequence[Layer], source: _Entry, spool: Path) -> tuple[tarfile.TarInfo, Path]:
    """What a replaced hard-link target was, and its content: read again from its own layer."""
    layer = layers[source.layer]
    with _open_layer(layer) as (tar, _blob, _tar_bytes):
        for ordinal, member in enumerate(tar):
            if ordinal == source.ordinal:
                fh = tar.extractfile(member) if member.isreg() else None
                out = spool / f"link-{source.layer}-{source.ordinal}"
                with out.open("wb") as dst:
                    if fh is not None:
                        shutil.copyfileobj(fh, dst, CHUNK)
                return member, out
    raise DamagedImageError(f"{layer.label} changed while it was read")


def flatten(layers: Sequence[Layer], out: BinaryIO) -> None:
    """Write the root filesystem ``layers`` make, as one uncompressed PAX tar, to ``out``."""
    state = _plan(layers)
    winners = {(e.layer, e.ordinal): e for e in state.entries.values()}
    with tempfile.TemporaryDirectory(prefix="imageci-flatten-") as spool, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
        for i, layer in enumerate(layers):
            with _open_layer(layer) as (tar, blob, tar_bytes):
                for ordinal, member in enumerate(tar):
                    entry = winners.get((i, ordinal))
                    if entry is None:
                        continue
                    info = _copy(member, entry.path)
                    if entry.source is None:
                        dst.addfile(info, tar.extractfile(member) if member.isreg() else None)
                    elif state.entries.get(entry.source.path) is entry.source:
                        info.linkname = entry.source.path
                        dst.addfile(info)
                    else:  # the file it linked to was replaced or removed above: keep its content
                        was, content = _content(layers, entry.source, Path(spool))
                        info = _copy(was, entry.path)  # one inode: the target's metadata too
                        if not was.issym():
                            info.type, info.linkname = tarfile.REGTYPE, ""
                        info.size = content.stat().st_size
                        with content.open("rb") as fh:
                            dst.addfile(info, fh if info.isreg() else None)
                        os.unlink(content)
                _check(layer, blob, tar_bytes)
