"""The API's routes made from the application's operation declarations
(``imageci.app.operations``): one route per operation, in the router of its
resource group (its ``tag``). A route authenticates, builds the operation's
request from the path, the query and the body (FastAPI validates each with the
request model's own field limits, so a bad value is a 400 problem), refuses an
anonymous caller where the operation needs a token, runs it with the caller's
principal in a worker thread, and returns its answer as it is."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as FastPath
from pydantic.fields import FieldInfo

from imageci.app.operations import BODY, Operation
from imageci.server.deps import Caller, SessionDep, json_rows, signed_in
from imageci.server.problems import Problem

API = "/api/v1"
# An answer as this API shows it, where it differs from the app's (results: log URLs of this server).
Presenter = Callable[[Request, Any], Any]


def _param(name: str, info: FieldInfo, where: Callable[..., Any]) -> inspect.Parameter:
    """The endpoint parameter of one request field, with the field's limits and description."""
    kind: Any = where(description=info.description)
    kind.metadata = [*kind.metadata, *info.metadata]
    default = inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[info.annotation, kind])


def _endpoint(op: Operation[Any, Any], present: Presenter | None) -> Callable[..., Any]:
    fields = op.request.model_fields

    def endpoint(request: Request, s: SessionDep, caller: Caller, **given: Any) -> Any:
        if op.needs_token:
            signed_in(caller)
        answer = op.run(s, op.request.model_construct(**given), caller)
        response = json_rows(present(request, answer) if present else answer)
        response.status_code = op.status
        return response

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=a)
              for n, a in (("request", Request), ("s", SessionDep), ("caller", Caller))]
    params += [_param(f, fields[f], FastPath) for f in op.path_fields]
    params += [_param(f, fields[f], Query) for f in op.query_fields]
    if op.has_body:
        params.append(_param(BODY, fields[BODY], Body))
    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = op.name
    endpoint.__doc__ = op.summary
    return endpoint


def add_operations(router: APIRouter, ops: list[Operation[Any, Any]],
                   present: Mapping[str, Presenter] | None = None) -> None:
    """One route on ``router`` for each of ``ops``."""
    for op in ops:
        responses: dict[int | str, dict[str, Any]] = {
            status: {"model": Problem, "description": why} for status, why in op.errors.items()}
        router.add_api_route(f"{API}{op.path}", _endpoint(op, (present or {}).get(op.name)), methods=[op.method],
                             response_model=op.answer, status_code=op.status, tags=[op.tag],
                             operation_id=op.name, responses=responses or None, summary=None,
                             description=op.summary)
