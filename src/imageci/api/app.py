"""The server (``imageci serve``): the API's routers, the feeds and the dashboard
on one FastAPI application over the application layer.

Every API route parses, authenticates, calls one ``imageci.app`` operation with
the request's principal, and returns its Pydantic rows as they are: the API
decides nothing the CLI does not decide the same way. Most routes are derived
from the operations' declarations (``imageci.api.derived``); the routers here
hold those that stream bytes or answer with idempotency statuses. Errors keep
their meaning: a bad request is a 4xx with the documented body, never a
traceback."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from imageci import __version__
from imageci.api import derived, health, images, publishing, runs
from imageci.app.operations import all_operations
from imageci.app.session import Session
from imageci.config import Settings
from imageci.errors import UsageError
from imageci.feeds import routes as feed_routes
from imageci.server.problems import document_problems, install_error_handlers
from imageci.server.requestlog import RequestLog, log_to_stderr
from imageci.store.reading import ReaderPool
from imageci.web.app import add_dashboard, page_for

# The API's resource groups: each router's hand-written routes, then the operations of its tag.
GROUPS: dict[str, list[APIRouter]] = {"operations": [health.router], "images": [images.router], "runs": [runs.router],
                                      "publishing": [publishing.router], "access": [], "vulnerabilities": [],
                                      "holds": []}
PRESENTERS: dict[str, derived.Presenter] = {"results": images.results_with_urls}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One catalog (its engine pools connections) and one store for every request; the process holds the
    home's shared lock while it serves. Opening the catalog migrates it and marks runs of dead processes
    aborted."""
    home = Session.open(app.state.settings)
    _ = home.catalog, home.store
    app.state.home = home
    app.state.readers = ReaderPool(app.state.settings.db_url)
    try:
        yield
    finally:
        app.state.readers.close()
        home.close()


def _routers() -> list[APIRouter]:
    ops = all_operations()
    unknown = {op.tag for op in ops} - set(GROUPS)
    if unknown:
        raise ValueError(f"operations of unknown API groups: {sorted(unknown)}")
    routers = []
    for tag, written in GROUPS.items():
        router = APIRouter()
        for part in written:
            router.include_router(part)
        derived.add_operations(router, [op for op in ops if op.tag == tag], PRESENTERS)
        routers.append(router)
    return routers


def create_app(settings: Settings, *, local_dashboard: bool = False) -> FastAPI:
    """The server: the API, the feeds and the dashboard (``imageci serve``); with ``local_dashboard``, the
    dashboard alone, read-only, acting as the local operator (``imageci dashboard``, on loopback)."""
    api = FastAPI(title="imageci", version=__version__, lifespan=lifespan,
                  description="Continuous integration for OS and container images: the team server.")
    api.state.settings = settings
    document_problems(api)
    api.add_middleware(RequestLog)
    add_dashboard(api, settings, local=local_dashboard)
    install_error_handlers(api, page_for)
    if local_dashboard:
        return api
    api.include_router(feed_routes.router)
    for router in _routers():
        api.include_router(router)
    return api


def app_from_environment() -> FastAPI:
    """The app for one of several worker processes: the settings come from the environment (the
    parent's, IMAGECI_HOME and the rest), as they came to the parent."""
    log_to_stderr()
    return create_app(Settings.load())


def serve(settings: Settings, host: str, port: int, workers: int = 1,
          tls: tuple[Path, Path] | None = None, *, local_dashboard: bool = False,
          sock: socket.socket | None = None) -> None:
    """Run the API with Uvicorn until SIGINT/SIGTERM (in-flight requests finish first). With
    ``workers`` > 1, that many processes share the socket (each with its own catalog connections; on
    SQLite, writes take turns through SQLite's lock). ``tls``: (certificate, key) PEM files: HTTPS.
    ``local_dashboard``: the read-only dashboard of this home alone; ``sock``: a socket already bound."""
    import ssl

    import uvicorn

    log_to_stderr()
    options: dict[str, Any] = dict(host=host, port=port, access_log=False, log_level="warning",
                                   timeout_graceful_shutdown=30)
    if sock is not None:
        options = dict(fd=sock.fileno(), access_log=False, log_level="warning", timeout_graceful_shutdown=30)
    if tls is not None:
        try:  # a bad pair is a usage error here, not a traceback in a worker
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(tls[0]), str(tls[1]))
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(f"--tls-cert/--tls-key: cannot use {tls[0]} with {tls[1]}: {exc}") from None
        options.update(ssl_certfile=str(tls[0]), ssl_keyfile=str(tls[1]))
    if workers > 1:
        uvicorn.run("imageci.api.app:app_from_environment", factory=True, workers=workers, **options)
        return
    uvicorn.run(create_app(settings, local_dashboard=local_dashboard), **options)
