"""Publishing from elsewhere: blobs uploaded streamed and checked against their
digest, then the version committed (201, or 200 for bytes already published
under that name); and vulnerability feeds uploaded as files."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request, Response

from imageci.api.schemas import BlobStored
from imageci.app import publishing, vulns
from imageci.errors import UsageError
from imageci.server.deps import Caller, SessionDep, signed_in
from imageci.server.problems import Problem
from imageci.store.blobs import BlobTooLargeError

API = "/api/v1"
router = APIRouter(tags=["publishing"])


@router.head(f"{API}/blobs/{{digest}}", responses={404: {"description": "not stored"}})
def blob_head(digest: str, s: SessionDep, caller: Caller) -> Response:
    """Whether the store has blob ``digest`` (Content-Length: its size): upload only what is missing.
    Needs scope ``publish``."""
    size = publishing.blob_size(s, caller, digest)
    if size is None:
        return Response(status_code=404)
    return Response(headers={"Content-Length": str(size), "ETag": f'"{digest.removeprefix("sha256:")}"'})


@router.put(f"{API}/blobs/{{digest}}", status_code=201, response_model=BlobStored, responses={413: {"model": Problem}})
async def blob_put(digest: str, request: Request, s: SessionDep, caller: Caller) -> BlobStored:
    """Upload one blob, streamed: it is stored only if its bytes hash to ``digest`` and number the
    Content-Length; nothing of a failed or interrupted upload remains. Needs scope ``publish``."""
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise UsageError("Content-Length must be a whole number")
    writer = publishing.blob_writer(s, caller, digest, int(length) if length is not None else None)
    try:
        async for chunk in request.stream():
            if chunk:
                await anyio.to_thread.run_sync(writer.write, chunk)
        blob = await anyio.to_thread.run_sync(writer.commit)
    except BaseException:
        writer.abort()
        raise
    return BlobStored(digest=f"sha256:{blob.digest}", size=blob.size)


@router.post(f"{API}/versions", response_model=publishing.Published, status_code=201)
def publish(body: publishing.PublishRequest, response: Response, s: SessionDep,
            caller: Caller) -> publishing.Published:
    """Commit a version whose artifacts were uploaded: registered and on ``testing`` in one step
    (201), or, for bytes already published under that name, the existing version (200)."""
    done = publishing.publish(s, body, by=caller)
    if not done.created:
        response.status_code = 200
    return done


@router.post(f"{API}/vulndb", response_model=vulns.ImportedFeed, status_code=201, tags=["vulnerabilities"],
             responses={413: {"model": Problem}})
async def vulndb_import(request: Request, s: SessionDep, caller: Caller,
                        name: Annotated[str | None, Query(max_length=64)] = None) -> vulns.ImportedFeed:
    """Import a feed file sent as the body (the tracker's JSON, OSV records, a zip of them),
    replacing the feed of that name in one transaction. Needs scope ``admin``."""
    from imageci.supply.vulnfeeds import MAX_FEED

    signed_in(caller)
    vulns.may_import(caller)
    s.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=s.settings.tmp_dir, prefix="vulndb-") as tmp:
        path = Path(tmp) / "feed"
        size = 0
        with path.open("wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_FEED:
                    raise BlobTooLargeError(f"a feed file may have at most {MAX_FEED} bytes")
                await anyio.to_thread.run_sync(fh.write, chunk)
        return await anyio.to_thread.run_sync(lambda: vulns.import_feed(s, path, name=name, by=caller))
