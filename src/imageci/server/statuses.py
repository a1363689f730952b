"""Application errors and HTTP statuses, both ways: the server answers an error
with its status, and the remote client turns a status back into the same error,
so a command exits with the same code whether it asked a server or its own home.
No FastAPI here: the remote CLI imports this."""

from __future__ import annotations

from imageci.errors import (
    CatalogUnusableError,
    Forbidden,
    GateRefused,
    ImageciError,
    ServerUnavailable,
    Unauthenticated,
    UnknownReferenceError,
    UsageError,
)
from imageci.store.blobs import BlobTooLargeError

# Application errors and HTTP statuses, both ways (the server answers with them, the remote CLI turns
# them back into the same errors, so the same exit codes). First match wins: subclasses come first.
STATUSES: tuple[tuple[type[ImageciError], int], ...] = (
    (Unauthenticated, 401), (Forbidden, 403), (UnknownReferenceError, 404), (GateRefused, 409),
    (BlobTooLargeError, 413), (UsageError, 400), (CatalogUnusableError, 503), (ServerUnavailable, 503))


def status_of(exc: ImageciError) -> int:
    """The HTTP status of an application error (its CLI exit code's counterpart); 500 for the rest."""
    return next((status for kind, status in STATUSES if isinstance(exc, kind)), 500)


def error_of(status: int, message: str, retry: bool = False) -> ImageciError:
    """The application error an HTTP status stands for (422, FastAPI's validation, is bad input too);
    ``retry``: the answer said when to try again (``Retry-After``): a 503 that will pass (the object store
    was away), not an unusable catalog."""
    if retry and status == 503:
        return ServerUnavailable(message)
    kind = next((k for k, st in STATUSES if st == status), UsageError if status == 422 else ImageciError)
    return kind(message)
