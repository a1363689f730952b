"""The bodies only the HTTP server has (health, readiness, a stored blob); every
other request and answer is the application layer's own model."""

from __future__ import annotations

from pydantic import BaseModel


class Health(BaseModel):
    status: str
    version: str


class Readiness(BaseModel):
    status: str  # ready | not ready
    catalog: str  # its schema revision, or why it cannot be used
    store: str


class BlobStored(BaseModel):
    digest: str  # sha256:<hex>
    size: int
