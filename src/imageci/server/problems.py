"""One shape for every error the API answers: ``{"error", "status", "request_id"}``.

FastAPI answers a request that fails validation with ``422 {"detail": [...]}`` and documents that on
every route; imageci answers it as any other bad request (400, the documented body) and says so in
its OpenAPI document, so that a client reads one shape whatever went wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from imageci.errors import ImageciError, ServerUnavailable
from imageci.server.requestlog import access_log
from imageci.server.statuses import status_of

PROBLEM_REF = "#/components/schemas/Problem"


class Problem(BaseModel):
    error: str  # what went wrong, for people
    status: int
    request_id: str


def problem(request: Request, status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The documented error body for ``status``, with the request's id."""
    rid = getattr(request.state, "request_id", "")
    return JSONResponse(Problem(error=message, status=status, request_id=rid).model_dump(), status_code=status,
                        headers=dict(headers or {}) or None)


def validation_message(exc: RequestValidationError) -> str:
    """Each invalid field as ``where: what`` (``body.name: Field required``), at most ten, one line."""
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(x) for x in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    more = len(exc.errors()) - 10
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _rewrite(document: dict[str, Any]) -> dict[str, Any]:
    """Every ``422`` FastAPI documents becomes the ``400`` imageci answers, with the Problem body."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Problem", Problem.model_json_schema())
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    body = {"application/json": {"schema": {"$ref": PROBLEM_REF}}}
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses") if isinstance(operation, dict) else None
            if responses is None or "422" not in responses:
                continue
            del responses["422"]
            responses.setdefault("400", {"description": "Bad request (the error names each invalid field)",
                                         "content": body})
    return document


def document_problems(api: FastAPI) -> None:
    """``api.openapi()`` with validation errors documented as they are answered."""

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = _rewrite(get_openapi(title=api.title, version=api.version,
                                                      description=api.description, routes=api.routes))
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


# The dashboard's page for a request that failed (request, status, message, whether a browser's request for
# anything gets one), or None: the problem body.
PageFor = Callable[[Request, int, str, bool], Response | None]


def install_error_handlers(api: FastAPI, page_for: PageFor) -> None:
    """Every error answered in one shape: an application error with its status (``statuses``), a request
    that fails validation as 400, Starlette's own (404, 405) as problems too; ``page_for`` gives a
    browser its page instead."""

    @api.exception_handler(ImageciError)
    async def app_error(request: Request, exc: ImageciError) -> Response:
        status = status_of(exc)
        if status >= 500:
            access_log.error(json.dumps({"request_id": getattr(request.state, "request_id", ""), "error": str(exc),
                                         "kind": type(exc).__name__}))
        page = page_for(request, status, str(exc), False)
        if page is not None:
            return page
        return problem(request, status, str(exc), {"WWW-Authenticate": "Bearer"} if status == 401
                       else {"Retry-After": "10"} if isinstance(exc, ServerUnavailable) else {})

    @api.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        fields = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg', '')}"
                           for e in exc.errors())
        page = page_for(request, 400, f"bad request: {fields}", False)
        return page if page is not None else problem(request, 400, f"bad request: {validation_message(exc)}")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and "text/html" in request.headers.get("accept", ""):
            page = page_for(request, 404, f"there is no page at {request.url.path[:200]}", True)
            if page is not None:
                return page
        if exc.status_code < 400:
            return await http_exception_handler(request, exc)
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return problem(request, exc.status_code, message, dict(exc.headers or {}))
