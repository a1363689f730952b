"""Where committed blobs live: the one narrow interface of the artifact store's
backends, and the first of them, a local directory (``store/blobs/sha256/ab/<digest>``).

The other is S3-compatible object storage (``store/s3objects.py``), chosen by
``IMAGECI_STORE_URL``. Every backend is content-addressed: a blob's name is the
sha256 of its bytes, a blob is committed only after those bytes were hashed, and
what a backend hands out as a local path holds exactly those bytes (a backend
whose blobs are elsewhere fetches them into a verified local cache first).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from imageci.errors import ImageciError, ServerUnavailable
from imageci.exitcodes import ExitCode


class CorruptBlobError(ImageciError):
    exit_code = ExitCode.STORE_CORRUPT


class StoreUnavailable(ServerUnavailable):
    """The object store could not be reached or refused a request: nothing was committed, and the same
    request may succeed when tried again (the server answers 503 with ``Retry-After``)."""


class Pin:
    """A blob's local file, held against eviction from a cache until released (or until this object is
    collected, or its process ends): what a run holds while a testbed reads the file."""

    def __init__(self, path: Path, fd: int | None = None) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *_exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class Blob:
    digest: str  # hex sha256
    size: int


def hex_digest(digest: str) -> str:
    """``digest`` (``sha256:<hex>`` or ``<hex>``) as 64 lowercase hex digits, or ValueError."""
    digest = digest.removeprefix("sha256:")
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return digest


class Streaming(Protocol):
    """An upload's bytes on their way to the backend while they arrive (committed by the backend's commit)."""

    def write(self, chunk: bytes) -> None: ...

    def abort(self) -> None: ...


class Objects(Protocol):
    """A backend of the artifact store: where committed blobs are kept."""

    location: str  # what ``readyz`` and ``doctor`` name (never a secret)

    def stream(self, digest: str) -> Streaming | None:
        """Where an upload's bytes may go while they arrive (object storage: a multipart upload), or None."""

    def commit(self, tmp: Path, blob: Blob, streamed: Any = None) -> None:
        """Keep ``tmp`` (hashed by the caller: its digest is ``blob.digest``) as that blob; ``tmp`` is gone after.
        ``streamed``: what :meth:`stream` gave, fed the same bytes: made visible now."""

    def local(self, digest: str) -> Path:
        """A local file with the blob's bytes (fetched and hashed first, where the blob is remote); a path
        that does not exist when the blob is missing."""

    def pin(self, digest: str) -> Pin:
        """``local(digest)``, never evicted until the pin is released (a run's testbed reads it)."""

    def has(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int | None:
        """The blob's size, or None when it is missing."""

    def listing(self) -> Iterator[tuple[str, float]]:
        """Every blob's digest and when it was last stored or wanted (Unix time)."""

    def delete(self, digest: str) -> None: ...

    def touch(self, digest: str) -> None:
        """Mark the blob as wanted now: gc's grace for unreferenced blobs starts again."""

    def intact(self, digest: str) -> bool:
        """Whether the blob's bytes, where the backend keeps them, still hash to its name."""

    def url(self, digest: str, filename: str) -> str | None:
        """A short-lived URL a client may fetch the blob from itself, or None (served through this process)."""

    def check(self) -> str:
        """"writable" when blobs can be stored now; otherwise why not, in words (no address, no secret)."""

    def sweep(self, older_than: float) -> list[str]:
        """Remove what interrupted uploads left in the backend before ``older_than``; one line each."""


class LocalObjects:
    """Blobs as read-only files in a directory of this machine, renamed into place when complete."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = "local directory"
        root.mkdir(parents=True, exist_ok=True)

    def local(self, digest: str) -> Path:
        digest = hex_digest(digest)
        return self.root / digest[:2] / digest

    def stream(self, digest: str) -> Streaming | None:
        return None

    def commit(self, tmp: Path, blob: Blob, streamed: Any = None) -> None:
        final = self.local(blob.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            tmp.unlink()
            os.utime(final)  # wanted again now: gc's grace for unreferenced blobs starts again
        else:
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)

    def pin(self, digest: str) -> Pin:
        return Pin(self.local(digest))  # never evicted: only gc removes a blob, and only an unreferenced one

    def has(self, digest: str) -> bool:
        return self.local(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return self.local(digest).stat().st_size
        except FileNotFoundError:
            return None

    def listing(self) -> Iterator[tuple[str, float]]:
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir():
                for f in sorted(sub.iterdir()):
                    with contextlib.suppress(FileNotFoundError):
                        yield f.name, f.stat().st_mtime

    def delete(self, digest: str) -> None:
        self.local(digest).unlink(missing_ok=True)

    def touch(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.local(digest))

    def intact(self, digest: str) -> bool:
        from imageci.store.blobs import hash_file

        return hash_file(self.local(digest)).digest == digest

    def url(self, digest: str, filename: str) -> str | None:
        return None

    def check(self) -> str:
        return "writable" if self.root.is_dir() and os.access(self.root, os.W_OK) else "not writable"

    def sweep(self, older_than: float) -> list[str]:
        return []  # an interrupted upload is a temporary file of a dead process: gc removes those
