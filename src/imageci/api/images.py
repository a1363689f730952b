"""Images: a version's bytes and logs as files (with ``Range`` and ``ETag``), a
consumer's snapshot, and the results as this server shows them (each log as a
URL here). The JSON queries and changes of this group are derived from their
operations (``imageci.api.derived``)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi import Path as FastPath
from fastapi.responses import FileResponse, RedirectResponse

from imageci.app import consumers, queries
from imageci.app.operations import MAX_ID
from imageci.definitions.image import NAME_RE
from imageci.server.deps import BlobResponse, Caller, SessionDep

API = "/api/v1"
IMMUTABLE = "private, max-age=31536000, immutable"
router = APIRouter(tags=["images"])


def results_with_urls(request: Request, found: Any) -> Any:
    """``results`` as the API answers it: each attempt's ``log`` is the URL of its log on this server."""
    assert isinstance(found, queries.Results)
    base = f"{str(request.base_url).rstrip('/')}{API}/images/{quote(found.image, safe='@')}/log"
    for a in found.attempts:
        if a.log is not None:
            a.log = f"{base}?test={quote(a.test, safe='')}&run={a.run}&attempt={a.attempt}"
    return found


@router.get(f"{API}/images/{{ref}}/log", response_class=FileResponse,
            responses={200: {"content": {"text/plain": {}}}})
def log(ref: str, test: Annotated[str, Query(min_length=1, max_length=255)], s: SessionDep, caller: Caller,
        run: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        attempt: Annotated[int | None, Query(ge=1, le=1000)] = None) -> FileResponse:
    """The log of a test's latest attempt on a version (or of the ``run`` and ``attempt`` given)."""
    path = queries.log_path(s, ref, test, run=run, attempt=attempt, viewer=caller)
    return BlobResponse(path, media_type="text/plain; charset=utf-8",
                        headers={"ETag": f'"{path.name}"', "Cache-Control": IMMUTABLE})


@router.get(f"{API}/images/{{ref}}/artifacts/{{filename}}", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a Range"},
                       307: {"description": "to a presigned URL of the object store"}})
def artifact(ref: str, filename: str, s: SessionDep, caller: Caller) -> Response:
    """An artifact's bytes, with ``Range`` (206) and ``ETag`` = its sha256 (``If-None-Match`` → 304); where
    the object store's presigned URLs are on (``IMAGECI_STORE_PRESIGN``), a redirect (307) to one."""
    row = queries.artifact_row(s, ref, filename, viewer=caller)
    url = s.store.url(row.digest, row.filename)
    if url is not None:
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})
    path = s.store.path(row.digest)
    return BlobResponse(path, filename=row.filename, media_type="application/octet-stream",
                        headers={"ETag": f'"{row.digest.removeprefix("sha256:")}"', "Cache-Control": IMMUTABLE})


@router.get(f"{API}/consumers/{{name}}/snapshot", response_class=FileResponse,
            responses={200: {"content": {"application/x-tar": {}}}})
def consumer_snapshot(name: Annotated[str, FastPath(pattern=NAME_RE)], s: SessionDep, caller: Caller) -> FileResponse:
    """A consumer's newest snapshot (a tar: ``suite/`` and ``wheelhouse/``), for a remote run or a worker to
    run the same suite; ``ETag`` = its sha256."""
    digest, path = consumers.snapshot_path(s, name, viewer=caller)
    return BlobResponse(path, filename=f"{name}.tar", media_type="application/x-tar",
                        headers={"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE})
