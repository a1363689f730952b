"""The API's own request and response bodies (the rest are the application
layer's rows). No FastAPI here: the remote CLI reads these too."""

from __future__ import annotations

from pydantic import BaseModel, Field

from imageci.errors import (
    CatalogUnusableError,
    Forbidden,
    GateRefused,
    ImageciError,
    Unauthenticated,
    UnknownReferenceError,
    UsageError,
)
from imageci.store.blobs import BlobTooLargeError

# Application errors and HTTP statuses, both ways (the server answers with them, the remote CLI turns
# them back into the same errors, so the same exit codes). First match wins: subclasses come first.
STATUSES: tuple[tuple[type[ImageciError], int], ...] = (
    (Unauthenticated, 401), (Forbidden, 403), (UnknownReferenceError, 404), (GateRefused, 409),
    (BlobTooLargeError, 413), (UsageError, 400), (CatalogUnusableError, 503))


def status_of(exc: ImageciError) -> int:
    """The HTTP status of an application error (its CLI exit code's counterpart); 500 for the rest."""
    return next((status for kind, status in STATUSES if isinstance(exc, kind)), 500)


def error_of(status: int, message: str) -> ImageciError:
    """The application error an HTTP status stands for (422, FastAPI's validation, is bad input too)."""
    kind = next((k for k, st in STATUSES if st == status), UsageError if status == 422 else ImageciError)
    return kind(message)


class Problem(BaseModel):
    error: str  # what went wrong, for people
    status: int
    request_id: str


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str  # ready | not ready
    catalog: str  # its schema revision, or why it cannot be used
    store: str


class WhoAmI(BaseModel):
    name: str
    namespace: str | None
    scopes: list[str]
    channel: str | None
    anonymous: bool


class PromoteRequest(BaseModel):
    to: str = "stable"
    force: bool = False
    reason: str = ""  # required with force; audited


class TokenRequest(BaseModel):
    name: str
    namespace: str
    scopes: str = "read"  # comma-separated: read,publish,test,promote,admin
    channel: str | None = None
    expires: str | None = None  # a duration, e.g. 90d


class BlobStored(BaseModel):
    digest: str  # sha256:<hex>
    size: int


class PruneRequest(BaseModel):
    older_than: str = Field(default="3d", max_length=32, description="an age: 3d, 12h, 90m")
    name: str | None = Field(default=None, max_length=63, description="only this product")
    dry_run: bool = False


class RetentionRequest(BaseModel):
    name: str | None = Field(default=None, max_length=63, description="only this product")
    dry_run: bool = False


class ProductChange(BaseModel):
    namespace: str | None = Field(default=None, max_length=63, description="move it to this namespace")
    public: bool | None = Field(default=None, description="readable without a token")
