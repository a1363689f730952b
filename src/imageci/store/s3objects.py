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
        config = Config(signature_version="s3v4", connect_timeout=5, read_timeout=60,
                        retries={"mode": "standard", "max_attempts": 3})
        self.client: S3Client = boto3.session.Session().client("s3", config=config)

    def key(self, digest: str) -> str:
        digest = hex_digest(digest)
        return f"{self.prefix}blobs/sha256/{digest[:2]}/{digest}"

    def commit(self, tmp: Path, blob: Blob) -> None:
        from boto3.s3.transfer import TransferConfig

        try:
            if self._head(blob.digest) is None:
                with _calls("store a blob"):
                    self.client.upload_file(str(tmp), self.bucket, self.key(blob.digest),
                                            ExtraArgs={"Metadata": {"sha256": blob.digest}},
                                            Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART))
            else:
                self.touch(blob.digest)
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
