"""Blobs in S3-compatible object storage (``IMAGECI_STORE_URL=s3://BUCKET/PREFIX``):
AWS S3, MinIO, Ceph RGW, Garage, SeaweedFS.

The client is boto3's, configured the way every AWS SDK is: the endpoint from
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` (or a profile), the region from
``AWS_REGION``/``AWS_DEFAULT_REGION``, credentials from the environment, the
shared files or an instance role. A blob is the object
``PREFIX/blobs/sha256/ab/<digest>``: it was hashed before its upload began (the
bytes sit in a local temporary file, hashed as they arrived), and an object
becomes visible only when its upload completes (multipart for large blobs), so
an interrupted upload leaves no object, only an incomplete multipart upload that
``gc`` aborts. Every fetch is hashed before the bytes are used: an object whose
bytes were changed in the bucket is refused (and ``verify`` names it).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from imageci.errors import UsageError
from imageci.store.blobcache import ReadCache
from imageci.store.objects import Blob, CorruptBlobError, Pin, StoreUnavailable, hex_digest

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

log = logging.getLogger("imageci.store")
CHUNK = 1 << 20
PART = 32 << 20  # multipart above this size, in parts of this size
STREAM_PART = 8 << 20  # an upload streamed as it arrives: parts of this size
IN_FLIGHT = 3  # parts of one streamed upload sent or waiting at once (memory: IN_FLIGHT × STREAM_PART)


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` as (bucket, prefix ending in '/' or empty), or a UsageError."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not url.startswith("s3://") or not bucket or any(c in bucket for c in " ?#"):
        raise UsageError(f"IMAGECI_STORE_URL must be s3://BUCKET or s3://BUCKET/PREFIX (got {url!r})")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


@contextlib.contextmanager
def _calls(what: str) -> Iterator[None]:
    """The object store's failures as StoreUnavailable: a message with no address and no secret (a
    client of the server sees it); the log has the details."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        log.warning("object store: %s: %s", what, exc)
        raise StoreUnavailable(f"the object store refused to {what} ({code}); try again later") from None
    except (BotoCoreError, OSError) as exc:
        log.warning("object store: %s: %s", what, exc)
        raise StoreUnavailable(f"the object store could not be reached to {what}; try again later") from None


def _missing(exc: Any) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchKey", "NotFound")


class S3Objects:
    def __init__(self, url: str, cache: ReadCache, tmp: Path, tmp_prefix: str, presign: int = 0) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = parse_url(url)
        self.location = f"s3://{self.bucket}/{self.prefix}"
        self.cache, self.tmp, self.tmp_prefix, self.presign = cache, tmp, tmp_prefix, presign
        # checksums only where S3 requires them: every fetch is hashed (sha256) before its bytes are used
        config = Config(signature_version="s3v4", connect_timeout=5, read_timeout=60,
                        retries={"mode": "standard", "max_attempts": 3},
                        request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self.client: S3Client = boto3.session.Session().client("s3", config=config)

    def key(self, digest: str) -> str:
        digest = hex_digest(digest)
        return f"{self.prefix}blobs/sha256/{digest[:2]}/{digest}"

    def stream(self, digest: str) -> Streamed:
        """An upload sent to the bucket as its bytes arrive (a multipart upload, invisible until completed)."""
        return Streamed(self.client, self.bucket, self.key(digest), hex_digest(digest))

    def commit(self, tmp: Path, blob: Blob, streamed: Streamed | None = None) -> None:
        from boto3.s3.transfer import TransferConfig

        try:  # stored even when the object exists (same name, same bytes): its last-modified time is now (gc)
            if streamed is not None:
                streamed.complete()
            else:
                with _calls("store a blob"):
                    self.client.upload_file(str(tmp), self.bucket, self.key(blob.digest),
                                            ExtraArgs={"Metadata": {"sha256": blob.digest}},
                                            Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART))
            self.cache.add(tmp, blob.digest)  # here already: a build or a test on this machine reads it next
        finally:
            tmp.unlink(missing_ok=True)

    def local(self, digest: str) -> Path:
        return self.cache.hit(digest) or self._fetch(hex_digest(digest))

    def _fetch(self, digest: str) -> Path:
        """The object's bytes into the cache, hashed on the way; its (missing) cache path when there is none."""
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=self.tmp_prefix + "fetch-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                got = self._stream(digest, out.write)
            if got is None:
                return self.cache.path(digest)
            if got != digest:
                raise CorruptBlobError(f"blob sha256:{digest} was changed in the object store (its bytes hash to "
                                       f"{got}): refused")
            return self.cache.add(tmp, digest)
        finally:
            tmp.unlink(missing_ok=True)

    def _stream(self, digest: str, sink: Any) -> str | None:
        """Feed the object's bytes to ``sink``; their sha256, or None when there is no such object."""
        from botocore.exceptions import ClientError

        h = hashlib.sha256()
        with _calls("fetch a blob"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
            for chunk in body.iter_chunks(CHUNK):
                h.update(chunk)
                sink(chunk)
        return h.hexdigest()

    def pin(self, digest: str) -> Pin:
        def fetch() -> Path:
            path = self.local(digest)
            if not path.exists():  # evicted since, or not in the bucket
                path = self._fetch(hex_digest(digest))
            if not path.exists():
                raise CorruptBlobError(f"blob sha256:{hex_digest(digest)} is missing from the object store")
            return path

        return self.cache.pin(fetch)

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        with _calls("look up a blob"):
            try:
                return dict(self.client.head_object(Bucket=self.bucket, Key=self.key(digest)))
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise

    def has(self, digest: str) -> bool:
        return self.cache.hit(digest) is not None or self._head(digest) is not None

    def size(self, digest: str) -> int | None:
        head = self._head(digest)
        return None if head is None else int(head["ContentLength"])

    def listing(self) -> Iterator[tuple[str, float]]:
        base = f"{self.prefix}blobs/sha256/"
        with _calls("list blobs"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    name = obj["Key"].rsplit("/", 1)[-1]
                    modified: datetime = obj["LastModified"]
                    yield name, modified.timestamp()

    def delete(self, digest: str) -> None:
        with _calls("delete a blob"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))
        self.cache.drop(digest)

    def touch(self, digest: str) -> None:
        """Copied onto itself (new metadata): its last-modified time, which gc reads, is now."""
        key = self.key(digest)
        with _calls("mark a blob as wanted"):
            self.client.copy_object(Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
                                    MetadataDirective="REPLACE", Metadata={"sha256": hex_digest(digest)})

    def intact(self, digest: str) -> bool:
        return self._stream(hex_digest(digest), lambda _chunk: None) == hex_digest(digest)

    def url(self, digest: str, filename: str) -> str | None:
        if not self.presign:
            return None
        disposition = f"attachment; filename*=UTF-8''{quote(filename, safe='')}"
        with _calls("sign a download"):
            return self.client.generate_presigned_url(
                "get_object", ExpiresIn=self.presign,
                Params={"Bucket": self.bucket, "Key": self.key(digest), "ResponseContentDisposition": disposition})

    def check(self) -> str:
        try:
            with _calls("answer"):
                self.client.head_bucket(Bucket=self.bucket)
        except StoreUnavailable as exc:
            return str(exc)
        return "writable"

    def sweep(self, older_than: float) -> list[str]:
        """Abort the multipart uploads that interrupted commits left (never visible, never referenced)."""
        removed = []
        with _calls("list interrupted uploads"):
            found = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=f"{self.prefix}blobs/")
            for up in found.get("Uploads", []):
                if up["Initiated"].timestamp() < older_than:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    removed.append(f"aborted an interrupted upload of {up['Key']}")
        return removed


class Streamed:
    """One upload streamed to the bucket while it arrives: parts of ``STREAM_PART`` bytes sent from a thread
    as they fill (at most ``IN_FLIGHT`` at once), completed — made visible — only by :meth:`complete`, which
    the writer calls after the whole upload hashed to its name; :meth:`abort` leaves nothing."""

    def __init__(self, client: S3Client, bucket: str, key: str, digest: str) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self.client, self.bucket, self.key, self.digest = client, bucket, key, digest
        self.buf = bytearray()
        self.upload_id: str | None = None
        self.parts: list[Future[dict[str, Any]]] = []
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="s3-part")

    def write(self, chunk: bytes) -> None:
        self.buf += chunk
        while len(self.buf) >= STREAM_PART:
            piece = bytes(self.buf[:STREAM_PART])
            del self.buf[:STREAM_PART]
            self._send(piece)

    def _send(self, piece: bytes) -> None:
        with _calls("store a blob"):
            if self.upload_id is None:
                self.upload_id = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, Metadata={"sha256": self.digest})["UploadId"]
            pending = [f for f in self.parts if not f.done()]
            if len(pending) >= IN_FLIGHT:
                pending[0].result()
            self.parts.append(self.pool.submit(self._part, len(self.parts) + 1, piece))

    def _part(self, number: int, piece: bytes) -> dict[str, Any]:
        assert self.upload_id is not None
        with _calls("store a blob"):
            done = self.client.upload_part(Bucket=self.bucket, Key=self.key, PartNumber=number,
                                           UploadId=self.upload_id, Body=piece)
        return {"PartNumber": number, "ETag": done["ETag"]}

    def complete(self) -> None:
        try:
            with _calls("store a blob"):
                if self.upload_id is None:  # smaller than one part: one PUT
                    self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buf),
                                           Metadata={"sha256": self.digest})
                    return
                if self.buf:
                    self._send(bytes(self.buf))
                parts = [f.result() for f in self.parts]
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                      MultipartUpload={"Parts": parts})  # type: ignore[typeddict-item]
                self.upload_id = None
        except BaseException:
            self.abort()
            raise
        finally:
            self.pool.shutdown(wait=False)

    def abort(self) -> None:
        """Nothing of this upload stays in the bucket (what a dead process left, ``gc`` aborts)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.upload_id is not None:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None
