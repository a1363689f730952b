"""Operations, each declared once: its name, its typed request and answer, the
HTTP method and path it answers at, who may call it, and the function that does
it. Every interface is derived from the declaration:

- the API (``imageci.api.derived``) makes one route per operation: the request's
  fields named in the path are path parameters, its field ``body`` (if any) is
  the JSON body, the others are query parameters, each with the request model's
  own limits; the answer is the route's response model;
- the remote client (``ApiClient.call``) builds that same request and reads the
  answer back as the same type;
- the CLI (``cli.sources.Source.call``) runs the function on this home, as the
  local operator, or asks the configured server.

So a new read-only query is its request model, its function and its
``@operation`` line in an ``app/`` module, the command that prints it, and its
test. Operations that stream bytes (logs, artifacts, uploads) or answer with
idempotency statuses keep hand-written routes in ``imageci.api``.

No FastAPI and no SQLAlchemy here: the CLI's query commands import this.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from imageci.app.access import Principal
    from imageci.app.session import Session

Req = TypeVar("Req", bound=BaseModel)
Ans = TypeVar("Ans")

MAX_ID = (1 << 63) - 1  # ids are 64-bit
METHODS = ("GET", "POST", "PATCH", "DELETE")
BODY = "body"  # the request field that travels as the JSON body
PATH_FIELD = re.compile(r"\{([a-z_]+)\}")

# The app modules that declare operations; the API imports them all to make its routes.
MODULES = ("queries", "flakiness", "gating", "pins", "inventory", "vulns", "compliance", "ciplans", "quarantines",
           "consumers", "retention", "upkeep", "products", "tokens", "recording", "livelogs", "bisections",
           "knownfailures", "knowncounts", "regressions", "holds", "holdpipes")


class Args(BaseModel):
    """An operation's request (a command's arguments)."""

    model_config = ConfigDict(defer_build=True)  # built when first used: a command pays for its own only


class NoArgs(Args):
    pass


class RefArgs(Args):
    ref: str = Field(description="the version: NAME, NAME@SERIAL, NAME:CHANNEL or sha256:DIGEST")


class RunArgs(Args):
    run_id: int = Field(ge=1, le=MAX_ID, description="a run's id")


@dataclass(frozen=True)
class Operation(Generic[Req, Ans]):
    name: str  # unique; the API's operationId
    method: str  # GET | POST | PATCH | DELETE
    path: str  # under /api/v1; {field} names a field of the request
    request: type[Req]
    answer: Any  # the answer's type (a model, list[Model], dict[str, Any])
    run: Callable[[Session, Req, Principal], Ans]
    tag: str  # the API's resource group
    summary: str  # what it does, for the API's documentation (the function's docstring)
    status: int = 200  # on success
    needs_token: bool = False  # anonymous callers are refused with 401 before it runs
    errors: dict[int, str] = field(default_factory=dict)  # documented error statuses beyond the usual ones

    @property
    def path_fields(self) -> list[str]:
        return PATH_FIELD.findall(self.path)

    @property
    def query_fields(self) -> list[str]:
        return [f for f in self.request.model_fields if f not in self.path_fields and f != BODY]

    @property
    def has_body(self) -> bool:
        return BODY in self.request.model_fields


class Asks(Protocol):
    """Something that answers operations: a server (``client.remote.ApiClient``) or this home
    (``cli.sources.Local``)."""

    def call(self, op: Operation[Any, Ans], req: BaseModel) -> Ans: ...


REGISTRY: dict[str, Operation[Any, Any]] = {}


def operation(method: str, path: str, *, request: type[Req], answer: Any, tag: str, status: int = 200,
              needs_token: bool = False, errors: dict[int, str] | None = None,
              name: str | None = None) -> Callable[[Callable[[Session, Req, Principal], Ans]], Operation[Req, Ans]]:
    """Declare the decorated function ``(session, request, principal) -> answer`` an operation."""
    if method not in METHODS:
        raise ValueError(f"{method}: not one of {METHODS}")

    def declare(fn: Callable[[Session, Req, Principal], Ans]) -> Operation[Req, Ans]:
        op = Operation(name=name or fn.__name__.removesuffix("_op"), method=method, path=path, request=request,
                       answer=answer, run=fn, tag=tag, summary=inspect.cleandoc(fn.__doc__ or ""), status=status,
                       needs_token=needs_token, errors=dict(errors or {}))
        missing = [f for f in op.path_fields if f not in request.model_fields]
        if missing:
            raise ValueError(f"{op.name}: {path} names {missing}, not fields of {request.__name__}")
        if op.has_body and method not in ("POST", "PATCH"):
            raise ValueError(f"{op.name}: a {method} has no body")
        if op.name in REGISTRY and REGISTRY[op.name].run is not fn:
            raise ValueError(f"operation {op.name} is declared twice")
        REGISTRY[op.name] = op
        return op

    return declare


def all_operations() -> list[Operation[Any, Any]]:
    """Every declared operation (importing the modules that declare them), in declaration order."""
    for module in MODULES:
        importlib.import_module(f"imageci.app.{module}")
    return list(REGISTRY.values())
