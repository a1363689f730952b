"""The API's own request and response bodies (the rest are the application
layer's rows). No FastAPI here: the remote CLI reads these too."""

from __future__ import annotations

from pydantic import BaseModel


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
