"""The HTTP API (``imageci serve``): FastAPI over the application layer.

Every route parses, authenticates, calls one ``imageci.app`` function with the
request's principal, and returns its Pydantic rows as they are: the API decides
nothing the CLI does not decide the same way. Errors keep their meaning: a bad
request is a 4xx with a message, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import anyio
from fastapi import Body, FastAPI, Header, Query, Request, Response
from fastapi import Path as FastPath
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageci import __version__
from imageci.api.deps import MAX_ID, BlobResponse, Caller, SessionDep, json_rows, signed_in
from imageci.api.problems import document_problems, problem, validation_message
from imageci.api.schemas import (
    BlobStored,
    Health,
    Problem,
    ProductChange,
    PromoteRequest,
    PruneRequest,
    Readiness,
    RetentionRequest,
    TokenRequest,
    WhoAmI,
    status_of,
)
from imageci.app import (
    ciplans,
    compliance,
    consumers,
    gating,
    inventory,
    livelogs,
    pins,
    products,
    publishing,
    quarantines,
    queries,
    recording,
    retention,
    tokens,
    upkeep,
    vulns,
)
from imageci.app.session import Session
from imageci.config import Settings
from imageci.definitions.durations import duration_arg
from imageci.definitions.image import NAME_RE
from imageci.errors import ImageciError, UsageError
from imageci.feeds import routes as feed_routes
from imageci.store.blobs import BlobTooLargeError
from imageci.store.catalogfile import HEAD
from imageci.store.reading import ReaderPool
from imageci.supply.forms import BomFormat
from imageci.web.app import add_dashboard, error_page, is_page

API = "/api/v1"
access_log = logging.getLogger("imageci.access")
SECRET_IN_PATH = re.compile(r"ici_[A-Za-z0-9_-]+")  # a feed URL's token is a credential: never logged


RunId = Annotated[int, FastPath(ge=1, le=MAX_ID, description="a run's id")]


class RequestLog:
    """Every request gets an id (the client's ``X-Request-ID`` when printable and ≤ 64 characters, else
    a fresh one), returned in ``X-Request-ID`` (with ``Server-Timing: app;dur=MS``, the time to the
    response's start) and written with the method, path, status, duration and
    principal as one JSON line of the access log. Plain ASGI: no task, no body buffering."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), "")
        rid = given if given and len(given) <= 64 and given.isascii() and given.isprintable() else secrets.token_hex(8)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        started = time.monotonic()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                took = (time.monotonic() - started) * 1000  # the work before the first byte: the server's time
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode()),
                                      (b"server-timing", f"app;dur={took:.1f}".encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            access_log.info(json.dumps({
                "request_id": rid, "method": scope["method"], "path": SECRET_IN_PATH.sub("ici_…", scope["path"]),
                "status": status,
                "ms": round((time.monotonic() - started) * 1000, 1), "principal": state.get("principal", "anonymous"),
                "client": client[0] if client else None}))


def create_app(settings: Settings, *, local_dashboard: bool = False) -> FastAPI:
    """The server: the API, the feeds and the dashboard (``imageci serve``); with ``local_dashboard``, the
    dashboard alone, read-only, acting as the local operator (``imageci dashboard``, on loopback)."""
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One catalog (its engine pools connections) and one store for every request; the process
        # holds the home's shared lock while it serves. Opening the catalog migrates it and marks
        # runs of dead processes aborted.
        home = Session.open(settings)
        _ = home.catalog, home.store
        app.state.home = home
        app.state.readers = ReaderPool(settings.db_url)
        try:
            yield
        finally:
            app.state.readers.close()
            home.close()

    api = FastAPI(title="imageci", version=__version__, lifespan=lifespan,
                  description="Continuous integration for OS and container images: the team server.")
    api.state.settings = settings
    document_problems(api)

    api.add_middleware(RequestLog)
    add_dashboard(api, settings, local=local_dashboard)

    @api.exception_handler(ImageciError)
    async def app_error(request: Request, exc: ImageciError) -> Response:
        status = status_of(exc)
        rid = getattr(request.state, "request_id", "")
        if status >= 500:
            access_log.error(json.dumps({"request_id": rid, "error": str(exc), "kind": type(exc).__name__}))
        if is_page(request):
            return error_page(request, status, str(exc))
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        return problem(request, status, str(exc), headers)

    @api.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        if is_page(request):
            problems = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg', '')}"
                                 for e in exc.errors())
            return error_page(request, 400, f"bad request: {problems}")
        return problem(request, 400, f"bad request: {validation_message(exc)}")

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and "text/html" in request.headers.get("accept", ""):
            return error_page(request, 404, f"there is no page at {request.url.path[:200]}")
        if exc.status_code < 400:
            return await http_exception_handler(request, exc)
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return problem(request, exc.status_code, message, dict(exc.headers or {}))

    if local_dashboard:
        return api
    api.include_router(feed_routes.router)

    @api.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        """The process answers."""
        return Health(status="ok", version=__version__)

    @api.get("/readyz", response_model=Readiness, tags=["operations"],
             responses={503: {"model": Readiness}})
    def readyz(s: SessionDep) -> Response:
        """The catalog answers at this imageci's schema and the store is writable."""
        try:
            revision = s.reader.rows("SELECT version_num FROM alembic_version")
            catalog = HEAD if revision == [(HEAD,)] else f"schema {revision!r}, not {HEAD}"
        except ImageciError as exc:
            catalog = f"unusable: {exc}"
        store = "writable" if settings.store_dir.is_dir() and _writable(settings) else "not writable"
        ready = catalog == HEAD and store == "writable"
        body = Readiness(status="ready" if ready else "not ready", catalog=catalog, store=store)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @api.get(f"{API}/whoami", response_model=WhoAmI, tags=["access"])
    def whoami(caller: Caller) -> WhoAmI:
        """The principal this request acts as (from its token; anonymous without one)."""
        return WhoAmI(name=caller.name, namespace=caller.namespace, scopes=sorted(caller.scopes),
                      channel=caller.channel, anonymous=caller.anonymous)

    @api.get(f"{API}/images", response_model=list[queries.ImageRow], tags=["images"])
    def images(s: SessionDep, caller: Caller, name: str | None = None) -> list[queries.ImageRow]:
        """Every version the caller may see (of product ``name``): state, channels, digest."""
        return json_rows(queries.images(s, name, viewer=caller))  # type: ignore[return-value]

    @api.get(f"{API}/images/{{ref}}/results", response_model=queries.Results, tags=["images"])
    def results(ref: str, s: SessionDep, caller: Caller, request: Request,
                test: Annotated[list[str] | None, Query()] = None) -> queries.Results:
        """Every recorded attempt for a version (only the ``test`` ones, when given) and their runs; each
        attempt's ``log`` is the URL of its log here."""
        found = queries.results(s, ref, test, viewer=caller)
        base = f"{str(request.base_url).rstrip('/')}{API}/images/{quote(found.image, safe='@')}/log"
        for a in found.attempts:
            if a.log is not None:
                a.log = f"{base}?test={quote(a.test, safe='')}&run={a.run}&attempt={a.attempt}"
        return json_rows(found)  # type: ignore[return-value]

    @api.get(f"{API}/images/{{ref}}/log", tags=["images"], response_class=FileResponse,
             responses={200: {"content": {"text/plain": {}}}})
    def log(ref: str, test: Annotated[str, Query(min_length=1, max_length=255)], s: SessionDep, caller: Caller,
            run: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
            attempt: Annotated[int | None, Query(ge=1, le=1000)] = None) -> FileResponse:
        """The log of a test's latest attempt on a version (or of the ``run`` and ``attempt`` given)."""
        path = queries.log_path(s, ref, test, run=run, attempt=attempt, viewer=caller)
        return BlobResponse(path, media_type="text/plain; charset=utf-8",
                            headers={"ETag": f'"{path.name}"', "Cache-Control": "private, max-age=31536000, immutable"})

    @api.get(f"{API}/images/{{ref}}/events", response_model=list[queries.EventRow], tags=["images"])
    def events(ref: str, s: SessionDep, caller: Caller) -> list[queries.EventRow]:
        """A version's audit trail: state changes and runs, oldest first."""
        return json_rows(queries.events(s, ref, viewer=caller))  # type: ignore[return-value]

    @api.get(f"{API}/images/{{ref}}/gate", response_model=gating.GateStatus, tags=["images"])
    def gate(ref: str, s: SessionDep, caller: Caller) -> gating.GateStatus:
        """The version's gate evaluated now: which requirements are met, which are not and why."""
        return json_rows(gating.gate_status(s, ref, viewer=caller))  # type: ignore[return-value]

    @api.get(f"{API}/images/{{ref}}/bom", tags=["images"])
    def bom(ref: str, s: SessionDep, caller: Caller,
            form: Annotated[BomFormat, Query(alias="format")] = BomFormat.JSON) -> dict[str, Any]:
        """The packages installed in the version, read from its root file system without running it:
        ``json`` (imageci's), ``spdx`` (SPDX 2.3) or ``cyclonedx`` (CycloneDX 1.6)."""
        if form == BomFormat.TABLE:
            raise UsageError("format 'table' is for terminals: ask for json, spdx or cyclonedx")
        return inventory.bom_document(s, ref, form, viewer=caller)

    @api.get(f"{API}/diff", response_model=inventory.VersionDiff, tags=["images"])
    def diff(before: Annotated[str, Query(min_length=1, max_length=300)],
             after: Annotated[str, Query(min_length=1, max_length=300)],
             s: SessionDep, caller: Caller) -> inventory.VersionDiff:
        """What changed from one version to another: packages added, removed, upgraded, downgraded, and
        files changed outside package management."""
        return inventory.diff(s, before, after, viewer=caller)

    @api.get(f"{API}/images/{{ref}}/vulns", response_model=vulns.VulnReport, tags=["images"])
    def vulns_of(ref: str, s: SessionDep, caller: Caller) -> vulns.VulnReport:
        """The version's known vulnerabilities according to the imported feeds, most severe first."""
        return vulns.report(s, ref, viewer=caller)

    @api.get(f"{API}/images/{{ref}}/compliance", response_model=compliance.ComplianceReport, tags=["images"])
    def compliance_of(ref: str, s: SessionDep, caller: Caller,
                      profile: Annotated[str | None, Query(max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$")] = None,
                      ) -> compliance.ComplianceReport:
        """The version's OpenSCAP evaluation with imageci's Debian 12 baseline (``profile``: another of
        its profiles): score and per-rule results, stored with the version."""
        return compliance.report(s, ref, profile=profile, viewer=caller)

    @api.get(f"{API}/vulndb", response_model=list[vulns.FeedRow], tags=["vulnerabilities"])
    def vulndb(s: SessionDep, caller: Caller) -> list[vulns.FeedRow]:
        """The imported vulnerability feeds."""
        signed_in(caller)
        return vulns.feeds(s)

    @api.post(f"{API}/vulndb", response_model=vulns.ImportedFeed, status_code=201, tags=["vulnerabilities"],
              responses={413: {"model": Problem}})
    async def vulndb_import(request: Request, s: SessionDep, caller: Caller,
                            name: Annotated[str | None, Query(max_length=64)] = None) -> vulns.ImportedFeed:
        """Import a feed file sent as the body (the tracker's JSON, OSV records, a zip of them),
        replacing the feed of that name in one transaction. Needs scope ``admin``."""
        import tempfile

        from imageci.supply.vulnfeeds import MAX_FEED

        signed_in(caller)
        vulns.may_import(caller)
        s.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=s.settings.tmp_dir, prefix="vulndb-") as tmp:
            path = Path(tmp) / "feed"
            size = 0
            with path.open("wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_FEED:
                        raise BlobTooLargeError(f"a feed file may have at most {MAX_FEED} bytes")
                    await anyio.to_thread.run_sync(fh.write, chunk)
            return await anyio.to_thread.run_sync(lambda: vulns.import_feed(s, path, name=name, by=caller))

    @api.post(f"{API}/images/{{ref}}/promote", response_model=gating.Promotion, tags=["images"],
              responses={409: {"model": Problem, "description": "the gate does not hold"}})
    def promote(ref: str, body: PromoteRequest, s: SessionDep, caller: Caller) -> gating.Promotion:
        """testing → stable when the gate holds (evaluated here, on the server's evidence), or forced
        with a reason; audited as the token's name. Needs scope ``promote`` in the product's namespace."""
        signed_in(caller)
        return gating.promotion_row(gating.promote(s, ref, to=body.to, force=body.force, reason=body.reason,
                                                   by=caller))

    @api.post(f"{API}/images/{{ref}}/pin", response_model=pins.PinRow, tags=["images"])
    def pin(ref: str, body: pins.PinRequest, s: SessionDep, caller: Caller) -> pins.PinRow:
        """Pin a version (scope ``promote``): retention never retires nor deletes it; audited."""
        signed_in(caller)
        return pins.pin(s, ref, body.reason, by=caller)

    @api.delete(f"{API}/images/{{ref}}/pin", response_model=pins.PinRow, tags=["images"])
    def unpin(ref: str, s: SessionDep, caller: Caller) -> pins.PinRow:
        """Unpin a version (scope ``promote``); audited."""
        signed_in(caller)
        return pins.pin(s, ref, None, by=caller)

    @api.get(f"{API}/images/{{ref}}", response_model=queries.VersionDetail, tags=["images"])
    def version(ref: str, s: SessionDep, caller: Caller) -> queries.VersionDetail:
        """One version: digest, state, namespace, architecture, definition, artifacts."""
        return json_rows(queries.version_detail(s, ref, viewer=caller))  # type: ignore[return-value]

    @api.get(f"{API}/images/{{ref}}/plan", response_model=ciplans.CiPlan, tags=["images"])
    def plan(ref: str, s: SessionDep, caller: Caller,
             testbed: Annotated[list[str] | None, Query(max_length=64)] = None) -> ciplans.CiPlan:
        """The version's suite × testbeds as another CI system's jobs would run them (`imageci ci`)."""
        return ciplans.ci_plan(s, ref, testbed, by=caller)

    @api.get(f"{API}/images/{{ref}}/artifacts", response_model=list[queries.ArtifactRow], tags=["images"])
    def artifacts(ref: str, s: SessionDep, caller: Caller) -> list[queries.ArtifactRow]:
        """A version's artifacts: kind, file name, sha256, size."""
        return json_rows(queries.artifacts(s, ref, viewer=caller))  # type: ignore[return-value]

    @api.get(f"{API}/images/{{ref}}/artifacts/{{filename}}", tags=["images"], response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a Range"}})
    def artifact(ref: str, filename: str, s: SessionDep, caller: Caller) -> FileResponse:
        """An artifact's bytes, with ``Range`` (206) and ``ETag`` = its sha256 (``If-None-Match`` → 304)."""
        row, path = queries.artifact_path(s, ref, filename, viewer=caller)
        return BlobResponse(path, filename=row.filename, media_type="application/octet-stream",
                            headers={"ETag": f'"{row.digest.removeprefix("sha256:")}"',
                                     "Cache-Control": "private, max-age=31536000, immutable"})

    @api.get(f"{API}/flaky", response_model=list[queries.FlakyRow], tags=["images"])
    def flaky(s: SessionDep, caller: Caller, name: str | None = None, since: str = "30d") -> list[queries.FlakyRow]:
        """Transient failures the caller may see: tests that failed, then passed within one run."""
        return json_rows(queries.flaky(s, name, duration_arg(since), viewer=caller))  # type: ignore[return-value]

    @api.get(f"{API}/quarantine", response_model=list[quarantines.QuarantineRow], tags=["images"])
    def quarantine_list(s: SessionDep, caller: Caller, product: str | None = None,
                        lifted: bool = False) -> list[quarantines.QuarantineRow]:
        """Quarantine entries of the products the caller may see: each newest suite's ``quarantine.yaml``
        and those kept here (lifted ones too with ``lifted``)."""
        return quarantines.entries(s, viewer=caller, product=product, lifted=lifted)

    @api.post(f"{API}/quarantine", response_model=quarantines.QuarantineRow, status_code=201, tags=["images"])
    def quarantine_add(body: quarantines.QuarantineRequest, s: SessionDep, caller: Caller) -> quarantines.QuarantineRow:
        """Keep a quarantine entry for a product (scope ``promote`` in its namespace): its tests' failures
        warn (or they are skipped) until it expires or is lifted; audited as the token's name."""
        signed_in(caller)
        return quarantines.add(s, body, by=caller)

    @api.post(f"{API}/quarantine/{{entry_id}}/lift", response_model=quarantines.QuarantineRow, tags=["images"])
    def quarantine_lift(entry_id: Annotated[int, FastPath(ge=1, le=MAX_ID)], body: quarantines.LiftRequest,
                        s: SessionDep, caller: Caller) -> quarantines.QuarantineRow:
        """Lift a quarantine entry kept here (scope ``promote``); it stays listed with ``lifted``."""
        signed_in(caller)
        return quarantines.lift(s, entry_id, body.reason, by=caller)

    @api.get(f"{API}/consumers", response_model=list[consumers.ConsumerRow], tags=["images"])
    def consumer_list(s: SessionDep, caller: Caller, product: str | None = None,
                      removed: bool = False) -> list[consumers.ConsumerRow]:
        """The consumers registered for the products the caller may see (removed ones too with ``removed``)."""
        return consumers.listing(s, product, removed=removed, viewer=caller)

    @api.post(f"{API}/consumers", response_model=consumers.ConsumerRow, status_code=201, tags=["images"])
    def consumer_add(body: consumers.ConsumerRequest, s: SessionDep, caller: Caller) -> consumers.ConsumerRow:
        """Register a consumer of a product (scope ``promote`` in its namespace): its suite (a directory or git
        repository as this server's machine reaches it) runs with every run of the product's suite here; a
        gating one blocks a promotion that breaks it."""
        signed_in(caller)
        return consumers.add(s, body, by=caller)

    @api.get(f"{API}/consumers/{{name}}/snapshot", tags=["images"], response_class=FileResponse,
             responses={200: {"content": {"application/x-tar": {}}}})
    def consumer_snapshot(name: Annotated[str, FastPath(pattern=NAME_RE)], s: SessionDep,
                          caller: Caller) -> FileResponse:
        """A consumer's newest snapshot (a tar: ``suite/`` and ``wheelhouse/``), for a remote run or a worker to
        run the same suite; ``ETag`` = its sha256."""
        digest, path = consumers.snapshot_path(s, name, viewer=caller)
        return BlobResponse(path, filename=f"{name}.tar", media_type="application/x-tar",
                            headers={"ETag": f'"{digest}"', "Cache-Control": "private, max-age=31536000, immutable"})

    @api.delete(f"{API}/consumers/{{name}}", response_model=consumers.ConsumerRow, tags=["images"])
    def consumer_remove(name: Annotated[str, FastPath(pattern=NAME_RE)], s: SessionDep,
                        caller: Caller) -> consumers.ConsumerRow:
        """Remove a consumer (scope ``promote``); it stays listed with ``removed``."""
        signed_in(caller)
        return consumers.remove(s, name, by=caller)

    @api.post(f"{API}/retention", response_model=retention.RetentionReport, tags=["operations"])
    def apply_retention(body: RetentionRequest, s: SessionDep, caller: Caller) -> retention.RetentionReport:
        """Apply every product's retention policy (or ``name``'s), scope ``admin``: versions retired and
        deleted, old logs and results dropped, blobs nothing references deleted; ``dry_run`` only says so."""
        signed_in(caller)
        return retention.retention(s, name=body.name, dry_run=body.dry_run, by=caller)

    @api.post(f"{API}/prune", response_model=list[gating.Pruned], tags=["images"])
    def prune(body: PruneRequest, s: SessionDep, caller: Caller) -> list[gating.Pruned]:
        """Retire ``testing`` versions older than ``older_than`` whose newest run did not pass, in the
        products the caller may promote in; ``dry_run`` only says which."""
        signed_in(caller)
        return gating.prune(s, older_than=duration_arg(body.older_than), name=body.name, dry_run=body.dry_run,
                            by=caller)

    @api.post(f"{API}/verify", response_model=upkeep.VerifyOutcome, tags=["operations"])
    def verify(s: SessionDep, caller: Caller) -> upkeep.VerifyOutcome:
        """Re-hash every blob of the server's store and check its caches (scope ``admin``)."""
        signed_in(caller)
        return upkeep.verify(s, by=caller)

    @api.post(f"{API}/gc", response_model=upkeep.GcOutcome, tags=["operations"])
    def gc(s: SessionDep, caller: Caller) -> upkeep.GcOutcome:
        """Remove what dead imageci processes left on the server, and blobs nothing references that are
        past their grace (scope ``admin``); never what a live process holds."""
        signed_in(caller)
        return upkeep.gc(s, force=True, by=caller)

    @api.head(f"{API}/blobs/{{digest}}", tags=["publishing"], responses={404: {"description": "not stored"}})
    def blob_head(digest: str, s: SessionDep, caller: Caller) -> Response:
        """Whether the store has blob ``digest`` (Content-Length: its size): upload only what is missing.
        Needs scope ``publish``."""
        size = publishing.blob_size(s, caller, digest)
        if size is None:
            return Response(status_code=404)
        return Response(headers={"Content-Length": str(size), "ETag": f'"{digest.removeprefix("sha256:")}"'})

    @api.put(f"{API}/blobs/{{digest}}", status_code=201, response_model=BlobStored, tags=["publishing"],
             responses={413: {"model": Problem}})
    async def blob_put(digest: str, request: Request, s: SessionDep, caller: Caller) -> BlobStored:
        """Upload one blob, streamed: it is stored only if its bytes hash to ``digest`` and number the
        Content-Length; nothing of a failed or interrupted upload remains. Needs scope ``publish``."""
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise UsageError("Content-Length must be a whole number")
        writer = publishing.blob_writer(s, caller, digest, int(length) if length is not None else None)
        try:
            async for chunk in request.stream():
                if chunk:
                    await anyio.to_thread.run_sync(writer.write, chunk)
            blob = await anyio.to_thread.run_sync(writer.commit)
        except BaseException:
            writer.abort()
            raise
        return BlobStored(digest=f"sha256:{blob.digest}", size=blob.size)

    @api.post(f"{API}/versions", response_model=publishing.Published, status_code=201, tags=["publishing"])
    def publish(body: publishing.PublishRequest, response: Response, s: SessionDep,
                caller: Caller) -> publishing.Published:
        """Commit a version whose artifacts were uploaded: registered and on ``testing`` in one step
        (201), or, for bytes already published under that name, the existing version (200)."""
        done = publishing.publish(s, body, by=caller)
        if not done.created:
            response.status_code = 200
        return done

    @api.post(f"{API}/images/{{ref}}/runs", response_model=recording.RunStarted, status_code=201, tags=["runs"])
    def run_start(ref: str, body: recording.RunStart, response: Response, s: SessionDep, caller: Caller,
                  idempotency_key: Annotated[str | None, Header()] = None) -> recording.RunStarted:
        """Start recording a run of a version tested elsewhere (scope ``test``). With an
        ``Idempotency-Key``, a retry answers 200 with the same run."""
        started = recording.start_run(s, ref, body, by=caller, key=idempotency_key)
        if not started.created:
            response.status_code = 200
        return started

    @api.post(f"{API}/runs/{{run_id}}/attempts", response_model=recording.AttemptRecorded, status_code=201,
              tags=["runs"])
    def attempt_record(run_id: RunId, body: recording.AttemptIn, response: Response, s: SessionDep, caller: Caller,
                       idempotency_key: Annotated[str | None, Header()] = None) -> recording.AttemptRecorded:
        """Record one attempt of a running run, with its log. With an ``Idempotency-Key``, a retried
        POST is recorded once (200 with the same id)."""
        done = recording.record_attempt(s, run_id, body, by=caller, key=idempotency_key)
        if not done.created:
            response.status_code = 200
        return done

    @api.post(f"{API}/runs/{{run_id}}/attempts/batch", response_model=list[recording.AttemptRecorded],
              tags=["runs"])
    def attempts_record(run_id: RunId, body: Annotated[list[recording.AttemptIn], Body(max_length=recording.MAX_BATCH)],
                        s: SessionDep, caller: Caller) -> list[recording.AttemptRecorded]:
        """Record up to 1000 attempts of a running run in one transaction, each with its own ``key``
        (idempotency): a retried batch records only what is missing."""
        return recording.record_attempts(s, run_id, body, by=caller)

    @api.post(f"{API}/runs/{{run_id}}/live", response_model=livelogs.LiveAppended, tags=["runs"])
    def live_append(run_id: RunId, body: livelogs.LiveChunk, s: SessionDep, caller: Caller) -> livelogs.LiveAppended:
        """Append what a running job printed to its live log (scope ``test``), from ``offset``: a retried
        append is written once; one past the end is not accepted and says where the log ends. Once the
        run ended nothing is kept (``size`` 0, not accepted)."""
        return livelogs.append(s, run_id, body, by=caller)

    @api.get(f"{API}/runs/{{run_id}}/live", response_model=list[livelogs.LiveLog], tags=["runs"])
    def live_list(run_id: RunId, s: SessionDep, caller: Caller) -> list[livelogs.LiveLog]:
        """The live logs of a run's jobs (an ended run's for a while: its attempts have the logs)."""
        return livelogs.logs(s, run_id, viewer=caller)

    @api.get(f"{API}/runs/{{run_id}}/live/{{key}}", tags=["runs"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    def live_read(run_id: RunId, key: Annotated[str, FastPath(min_length=8, max_length=128)], s: SessionDep,
                  caller: Caller, offset: Annotated[int, Query(ge=0, le=livelogs.MAX_LIVE * 2)] = 0) -> Response:
        """A job's live log from ``offset`` (at most 1 MiB; empty: nothing more yet)."""
        return Response(livelogs.read(s, run_id, key, offset, viewer=caller), media_type="text/plain; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    @api.post(f"{API}/runs/{{run_id}}/finish", response_model=recording.RunEnded, tags=["runs"])
    def run_finish(run_id: RunId, body: recording.RunEnd, s: SessionDep, caller: Caller) -> recording.RunEnded:
        """End a run with its exit code."""
        return recording.finish_run(s, run_id, body, by=caller)

    @api.get(f"{API}/products", response_model=list[products.ProductRow], tags=["images"])
    def product_list(s: SessionDep, caller: Caller) -> list[products.ProductRow]:
        """The products the caller may know of: public ones and those of its namespace."""
        return products.listing(s, by=caller)

    @api.patch(f"{API}/products/{{name}}", response_model=products.ProductRow, tags=["access"])
    def product_change(name: str, body: ProductChange, s: SessionDep, caller: Caller) -> products.ProductRow:
        """Move a product to another namespace and/or make it public or private (admin of both)."""
        signed_in(caller)
        return products.configure(s, name, namespace=body.namespace, public=body.public, by=caller)

    @api.get(f"{API}/runs/{{run_id}}/state", response_model=recording.RunState, tags=["runs"])
    def run_state(run_id: RunId, s: SessionDep, caller: Caller) -> recording.RunState:
        """Whether a run still takes attempts and the digest it tests (scope ``test``): what a worker
        asks before it runs a job of it."""
        return recording.run_state(s, run_id, by=caller)

    @api.get(f"{API}/runs/{{run_id}}", response_model=queries.Results, tags=["runs"])
    def run(run_id: RunId, s: SessionDep, caller: Caller) -> queries.Results:
        """One run: its version, status, and every attempt it recorded."""
        return json_rows(queries.run(s, run_id, viewer=caller))  # type: ignore[return-value]

    @api.get(f"{API}/tokens", response_model=list[tokens.TokenRow], tags=["access"])
    def token_list(s: SessionDep, caller: Caller) -> list[tokens.TokenRow]:
        """The tokens of the namespaces the caller administers (never their secrets)."""
        signed_in(caller)
        return tokens.listing(s, by=caller)

    @api.post(f"{API}/tokens", response_model=tokens.NewToken, status_code=201, tags=["access"])
    def token_create(body: TokenRequest, s: SessionDep, caller: Caller) -> tokens.NewToken:
        """A new token (admin of its namespace); its secret is in this response and nowhere else."""
        signed_in(caller)
        return tokens.create(s, body.name, body.namespace, body.scopes, channel=body.channel, by=caller,
                             expires=duration_arg(body.expires) if body.expires else None)

    @api.delete(f"{API}/tokens/{{name}}", response_model=tokens.TokenRow, tags=["access"])
    def token_revoke(name: str, s: SessionDep, caller: Caller) -> tokens.TokenRow:
        """Revoke a token (admin of its namespace): requests with it are refused from now on."""
        signed_in(caller)
        return tokens.revoke(s, name, by=caller)

    return api


def _writable(settings: Settings) -> bool:
    import os

    return os.access(settings.store_dir, os.W_OK)


def _log_to_stderr() -> None:
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def app_from_environment() -> FastAPI:
    """The app for one of several worker processes: the settings come from the environment (the
    parent's, IMAGECI_HOME and the rest), as they came to the parent."""
    _log_to_stderr()
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

    _log_to_stderr()
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
        uvicorn.run("imageci.api.server:app_from_environment", factory=True, workers=workers, **options)
        return
    uvicorn.run(create_app(settings, local_dashboard=local_dashboard), **options)
