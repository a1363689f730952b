"""The content-addressed artifact store: blobs named by their sha256.

Writes go to a temporary file of this process (hashed as written, fsynced)
and are committed to the backend only under the digest they hash to, so a
blob either does not exist or holds exactly the bytes its name promises.
Reads that hand out a path re-hash first (unless the file is the very one hashed
before: ``BlobStore.verified_path``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from imageci.config import Settings
from imageci.errors import UsageError
from imageci.store.objects import Blob, CorruptBlobError, LocalObjects, Objects, Pin, Streaming, hex_digest

__all__ = ["Blob", "BlobStore", "BlobWriter", "CorruptBlobError", "hash_file"]

CHUNK = 1 << 20


def file_stamp(path: Path) -> str:
    """What tells a file apart from any other, and from itself before any write (its ctime)."""
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def hash_file(path: Path) -> Blob:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return Blob(h.hexdigest(), size)


class BlobMismatchError(UsageError):
    """Uploaded bytes that are not what the uploader said (size or sha256): nothing was stored."""


class BlobTooLargeError(UsageError):
    """An upload past the configured limit: nothing was stored."""


class BlobWriter:
    """Bytes arriving in chunks (an upload), hashed as they are written to a temporary file of this
    process; ``commit`` stores them under their digest only if it and the size are the ones promised.
    Memory stays one chunk whatever the size; an aborted or failed writer leaves nothing behind (and
    a killed process leaves a temporary file of a dead owner, which ``imageci gc`` removes)."""

    def __init__(self, store: BlobStore, digest: str, size: int | None, limit: int | None) -> None:
        self.store, self.expected, self.size, self.limit = store, digest.removeprefix("sha256:"), size, limit
        hex_digest(self.expected)  # a well-formed digest, or ValueError
        fd, name = tempfile.mkstemp(dir=store.tmp, prefix=store.tmp_prefix)
        self.tmp = Path(name)
        self.fh = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.written = 0
        self.streamed = store.objects.stream(self.expected)  # object storage: sent while it arrives

    def write(self, chunk: bytes) -> None:
        self.written += len(chunk)
        if self.limit is not None and self.written > self.limit:
            self.abort()
            raise BlobTooLargeError(f"upload larger than the limit of {self.limit} bytes")
        if self.size is not None and self.written > self.size:
            self.abort()
            raise BlobMismatchError(f"upload longer than the {self.size} bytes announced")
        self.hash.update(chunk)
        self.fh.write(chunk)
        if self.streamed is not None:
            try:
                self.streamed.write(chunk)
            except BaseException:
                self.abort()
                raise

    def commit(self) -> Blob:
        try:
            got = self.hash.hexdigest()
            if self.size is not None and self.written != self.size:
                raise BlobMismatchError(f"upload truncated: {self.written} of {self.size} bytes arrived")
            if got != self.expected:
                raise BlobMismatchError(f"upload's sha256 is {got}, not the {self.expected} announced")
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            self.store._commit(self.tmp, got, self.streamed)
            self.streamed = None
            return Blob(got, self.written)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)
        streamed, self.streamed = self.streamed, None
        if streamed is not None:
            streamed.abort()


class BlobStore:
    """The artifact store every operation uses: blobs written through a temporary file of this process
    (hashed as written), committed to a backend (``store/objects.py``: a local directory, or object
    storage with a local read-through cache) and read back as verified local files."""

    def __init__(self, root: Path, owner: str = "", objects: Objects | None = None) -> None:
        """``owner`` (a token, imageci.owners) names this process's temporary files, so
        ``imageci gc`` removes only those of dead processes."""
        self.root = root
        self.tmp = root / "tmp"
        self.tmp_prefix = temp_prefix(owner)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.objects: Objects = objects or LocalObjects(root / "blobs" / "sha256")

    def path(self, digest: str) -> Path:
        """A local file with the blob's bytes (fetched into the cache first, where blobs are remote); a path
        that does not exist when the blob is missing."""
        return self.objects.local(digest)

    def pin(self, digest: str) -> Pin:
        """The blob's verified local file, kept (never evicted from a cache) until the pin is released:
        a run pins the files its testbeds read. A missing or corrupt blob is a CorruptBlobError."""
        held = self.objects.pin(digest)
        self.verified_path(digest)  # the pinned file: it cannot go between this check and the run
        return held

    def has(self, digest: str) -> bool:
        return self.objects.has(digest)

    def size(self, digest: str) -> int | None:
        return self.objects.size(digest)

    def url(self, digest: str, filename: str) -> str | None:
        """A short-lived URL to fetch the blob from the object store itself, where that is configured."""
        return self.objects.url(digest, filename)

    def _commit(self, tmp_path: Path, digest: str, streamed: Streaming | None = None) -> None:
        self.objects.commit(tmp_path, Blob(digest, tmp_path.stat().st_size), streamed)

    def writer(self, digest: str, size: int | None = None, limit: int | None = None) -> BlobWriter:
        """A writer for an upload of the blob ``digest`` (of ``size`` bytes, at most ``limit``)."""
        return BlobWriter(self, digest, size, limit)

    def put_bytes(self, data: bytes) -> Blob:
        digest = hashlib.sha256(data).hexdigest()
        if not self.has(digest):
            fd, name = tempfile.mkstemp(dir=self.tmp, prefix=self.tmp_prefix)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                self._commit(Path(name), digest)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
        return Blob(digest, len(data))

    def put_file(self, src: Path) -> Blob:
        """Copy ``src`` into the store while hashing it (one read)."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=self.tmp_prefix)
        tmp_path = Path(name)
        try:
            h = hashlib.sha256()
            size = 0
            with src.open("rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
            digest = h.hexdigest()
            self._commit(tmp_path, digest)
            return Blob(digest, size)
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise

    def move_file(self, src: Path) -> Blob:
        """Hash ``src`` and rename it into the store (same filesystem: no copy)."""
        try:
            return self.adopt(src, hash_file(src))
        except OSError:
            return self.put_file(src)

    def adopt(self, src: Path, blob: Blob) -> Blob:
        """Rename ``src``, a file in this store's tmp whose digest the caller computed while writing or
        checking it, into the store."""
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._commit(src, blob.digest)
        return blob

    def verified_path(self, digest: str) -> Path:
        """The blob's path, after checking its bytes still match its name: re-hashed unless the file is, to the
        nanosecond, the one hashed last time (device, inode, size, mtime and ctime, kept in ``verified/``: any
        write to it changes its ctime, which no one but the kernel sets). ``verify_all`` re-hashes everything,
        for what no write made (bit rot)."""
        p = self.path(digest)
        if not p.is_file():
            raise CorruptBlobError(f"blob sha256:{digest} is missing from the store")
        hexd = digest.removeprefix("sha256:")
        mark = self.root / "verified" / hexd
        seen = file_stamp(p)
        try:
            if mark.read_text() == seen:
                return p
        except OSError:
            pass
        if hash_file(p).digest != hexd:
            raise CorruptBlobError(f"blob sha256:{digest} is corrupt (content does not match its digest)")
        try:
            mark.parent.mkdir(exist_ok=True)
            tmp = mark.with_name(f".{hexd}.{os.getpid()}")
            tmp.write_text(seen)
            os.replace(tmp, mark)
        except OSError:
            pass  # (a read-only store: hashed every time)
        return p

    def read_bytes(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest.removeprefix("sha256:"):
            raise CorruptBlobError(f"blob sha256:{digest} is corrupt (content does not match its digest)")
        return data

    def iter_digests(self) -> Iterator[str]:
        for digest, _when in self.objects.listing():
            yield digest

    def remove_unreferenced(self, referenced: set[str], older_than: float, *, dry_run: bool = False) -> list[str]:
        """Remove blobs no one references that were stored before ``older_than`` (a time.time()):
        uploads never committed, refused imports, what retention let go. A younger blob may be part of a
        publish or build still on its way to its commit. ``dry_run``: only say which."""
        removed = []
        for digest, stored in list(self.objects.listing()):
            if digest in referenced or stored >= older_than:
                continue
            if not dry_run:
                self.objects.delete(digest)
                (self.root / "verified" / digest).unlink(missing_ok=True)
            removed.append(digest)
        return removed

    def touch(self, digest: str) -> None:
        """Mark a blob as wanted now (a publish found it already here): gc's grace starts again."""
        self.objects.touch(digest)

    def verify_all(self) -> tuple[int, list[str]]:
        """Re-hash every blob where the backend keeps it; return (count checked, digests that are corrupt)."""
        bad, n = [], 0
        for digest in self.iter_digests():
            n += 1
            if not self.objects.intact(digest):
                bad.append(digest)
        return n, bad


def open_store(settings: Settings, owner: str = "") -> BlobStore:
    """The store ``settings`` name: the home's directory, or the object store of ``IMAGECI_STORE_URL`` with
    a read-through cache in the home (within ``IMAGECI_CACHE_BUDGET``)."""
    root = settings.store_dir
    if not settings.store_url:
        return BlobStore(root, owner)
    from imageci.store.blobcache import ReadCache
    from imageci.store.s3objects import S3Objects

    cache = ReadCache(root / "cache" / "sha256", settings.cache_budget)
    objects = S3Objects(settings.store_url, cache, root / "tmp", temp_prefix(owner), settings.store_presign)
    return BlobStore(root, owner, objects)


def temp_prefix(owner: str) -> str:
    """How a process's temporary files in the store begin: its owner token, so gc removes only a dead one's."""
    return f"put-{owner}-" if owner else "put-"
