"""One shape for every error the API answers: ``{"error", "status", "request_id"}``.

FastAPI answers a request that fails validation with ``422 {"detail": [...]}`` and documents that on
every route; imageci answers it as any other bad request (400, the documented body) and says so in
its OpenAPI document, so that a client reads one shape whatever went wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from imageci.api.schemas import Problem

PROBLEM_REF = "#/components/schemas/Problem"


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
