"""Whether the server answers and is ready (``/healthz``, ``/readyz``): for load
balancers and orchestrators, outside ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from imageci import __version__
from imageci.api.schemas import Health, Readiness
from imageci.errors import ImageciError
from imageci.server.deps import SessionDep
from imageci.store.catalogfile import HEAD

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process answers."""
    return Health(status="ok", version=__version__)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(s: SessionDep) -> Response:
    """The catalog answers at this imageci's schema and the store (the home's directory, or the object
    store) takes writes."""
    try:
        revision = s.reader.rows("SELECT version_num FROM alembic_version")
        catalog = HEAD if revision == [(HEAD,)] else f"schema {revision!r}, not {HEAD}"
    except ImageciError as exc:
        catalog = f"unusable: {exc}"
    store = s.store.objects.check()
    ready = catalog == HEAD and store == "writable"
    body = Readiness(status="ready" if ready else "not ready", catalog=catalog, store=store)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
