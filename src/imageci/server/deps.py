"""What every route of the server takes: the request's session on the catalog
and store, the principal it acts for, and the ways rows and blobs go back."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic_core import to_json

from imageci.app import tokens
from imageci.app.access import ANONYMOUS, Principal
from imageci.app.session import Session
from imageci.errors import Unauthenticated


async def session(request: Request) -> AsyncIterator[Session]:
    """The request's session on the server's catalog and store (opened once, at start). Async: it
    does no I/O (a reader is taken from the pool when first read), so no worker thread is spent on it."""
    state = request.app.state
    s = Session.borrow(state.settings, state.home.catalog, state.home.store, state.readers)
    try:
        yield s
    finally:
        s.close()


SessionDep = Annotated[Session, Depends(session)]


def header_secret(header: str) -> str | None:
    """The token of an Authorization header: ``Bearer <token>``, or ``Basic`` with the token as the
    password (for clients that can only put credentials in a URL); None without a header."""
    if not header:
        return None
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip()
    if header.startswith("Basic "):
        try:
            _user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep, password = "", ""
        if sep and password:
            return password
    raise Unauthenticated("the Authorization header must be 'Bearer <token>' (or Basic with the token as "
                          "the password)")


async def acting_as(request: Request, s: Session, secret: str | None) -> Principal:
    """The principal of ``secret`` (anonymous for None); recorded on the request for the access log.
    On a SQLite catalog the lookup (one indexed row, from a pooled reader) runs right here, on the event
    loop: cheaper than a hop to a worker thread; a database server is asked from a worker thread."""
    if secret is None:
        found = ANONYMOUS
    elif request.app.state.readers.local:
        found = tokens.authenticate(s, secret) or ANONYMOUS
    else:
        asked: Principal | None = await run_in_threadpool(tokens.authenticate, s, secret)
        found = asked or ANONYMOUS
    request.state.principal = found.name
    return found


async def principal(request: Request, s: SessionDep) -> Principal:
    """Who the request acts for: its token's principal, or anonymous without one."""
    return await acting_as(request, s, header_secret(request.headers.get("authorization", "")))


Caller = Annotated[Principal, Depends(principal)]


def json_rows(rows: object) -> Response:
    """Rows the app layer built (and validated) as JSON, serialized once by pydantic-core: the route's
    response_model documents them without FastAPI validating them a second time."""
    return Response(content=to_json(rows), media_type="application/json")


class BlobResponse(FileResponse):
    chunk_size = 4 << 20  # fewer thread hops per byte than Starlette's 64 KiB


def signed_in(caller: Principal) -> None:
    if caller.anonymous:
        raise Unauthenticated("this needs a token (Authorization: Bearer <token>)")
