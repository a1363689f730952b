"""The dashboard's pages. Each route resolves who asks, calls the application
layer (the same functions as the CLI and the API) and renders a template; it
decides nothing itself. Application errors become an HTML page with the same
status as the API's (an unknown version is a 404 page, never a traceback)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastPath
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import ValidationError

from imageci.app import (
    access,
    bisections,
    flakiness,
    gating,
    history,
    inventory,
    livelogs,
    products,
    quarantines,
    queries,
    runview,
    tokens,
    vulns,
)
from imageci.app.access import Principal, Scope
from imageci.app.compare import compare
from imageci.app.logpages import PAGE, log_page
from imageci.app.matrix import cell, matrix
from imageci.app.operations import MAX_ID
from imageci.app.overview import overview
from imageci.app.queries import rows_in_bulk
from imageci.app.regressions import MARKS
from imageci.app.session import Session
from imageci.definitions.durations import duration_arg
from imageci.errors import ImageciError, UnknownReferenceError, UsageError
from imageci.server.deps import BlobResponse, SessionDep
from imageci.store.blobs import CorruptBlobError
from imageci.store.states import utcnow
from imageci.web.auth import COOKIE, check_form, check_origin, csrf_token, viewer
from imageci.web.plot import history_svg
from imageci.web.render import VERDICT_MARK

STATIC = Path(__file__).parent / "static"
MAX_FORM = 64 << 10
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def html_request(request: Request) -> None:
    """Marks the request as a page's: an application error answers with an HTML page."""
    request.state.html = True


router = APIRouter(include_in_schema=False, dependencies=[Depends(html_request)])


async def _viewer(request: Request, s: SessionDep) -> Principal:
    return await viewer(request, s)


Viewer = Annotated[Principal, Depends(_viewer)]
TestName = Annotated[str, Query(min_length=1, max_length=255)]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    me = getattr(request.state, "principal", "anonymous")
    with rows_in_bulk():  # a page is many small strings, none in a cycle: no collector passes over them
        body = request.app.state.web_env.get_template(template).render(
            request=request, me=me, local=request.app.state.web_local, csrf=csrf_token(request),
            signed_in=bool(request.cookies.get(COOKIE)) and not getattr(request.state, "signed_out", ""),
            signed_out=getattr(request.state, "signed_out", ""), **context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {400: "Bad request", 401: "Sign in needed", 403: "Not allowed", 404: "Not found", 409: "Refused"}
    return render(request, "error.html", status, title=titles.get(status, "Error"), message=message, code=status)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, s: SessionDep, me: Viewer) -> HTMLResponse:
    return render(request, "overview.html", cards=overview(s, viewer=me))


@router.get("/products/{name}", response_class=HTMLResponse)
def product(name: str, request: Request, s: SessionDep, me: Viewer) -> HTMLResponse:
    versions = list(reversed(queries.images(s, name, viewer=me)))
    if not versions:
        raise UnknownReferenceError(f"unknown image {name!r}")
    newest = versions[0]
    tests = [row.test for row in matrix(s, f"{name}@{newest.version}", viewer=me).rows]
    return render(request, "product.html", name=name, versions=versions, tests=tests, newest=newest)


def _siblings(s: Session, me: Principal, gate: gating.GateStatus) -> list[Any]:
    found = []
    for arch in gate.architectures:
        if arch.image:
            try:
                found.append(access.resolve(s.reader, me, arch.image))
            except ImageciError:
                continue
    return found


@router.get("/versions/{ref}", response_class=HTMLResponse)
def version(ref: str, request: Request, s: SessionDep, me: Viewer,
            promoted: Annotated[bool, Query(description="say that it was just promoted")] = False) -> HTMLResponse:
    detail = queries.version_detail(s, ref, viewer=me)
    label = f"{detail.name}@{detail.version}"
    gate = gating.gate_status(s, label, viewer=me)
    expected = [(r.test, r.testbed) for r in [*gate.met, *gate.unmet]]
    grid = matrix(s, label, viewer=me, siblings=_siblings(s, me, gate), expected=expected)
    cell_hrefs = [f"/versions/{quote(c.image, safe='@')}/cell?testbed={quote(c.testbed, safe='')}&test="
                  for c in grid.columns]
    return render(request, "version.html", detail=detail, label=label, gate=gate, grid=grid, cell_hrefs=cell_hrefs,
                  history_href=f"/history/{quote(detail.name, safe='')}?test=", marks=VERDICT_MARK, change_marks=MARKS,
                  arch_columns=len({c.architecture for c in grid.columns}) > 1,
                  events=queries.events(s, label, viewer=me), runs=runview.runs(s, label, viewer=me),
                  since=inventory.since_last_passed(s, label, viewer=me),
                  may_promote=me.may(Scope.PROMOTE, detail.namespace) and detail.state == "testing"
                  and not request.app.state.web_local,
                  done=_promoted_note(label, detail.state, gate) if promoted else "")


@router.get("/versions/{ref}/vulns", response_class=HTMLResponse)
def vulns_page(ref: str, request: Request, s: SessionDep, me: Viewer) -> HTMLResponse:
    return render(request, "vulns.html", r=vulns.report(s, ref, viewer=me))


@router.get("/versions/{ref}/cell", response_class=HTMLResponse)
def cell_page(ref: str, request: Request, s: SessionDep, me: Viewer, test: TestName,
              testbed: Annotated[str | None, Query(max_length=64)] = None) -> HTMLResponse:
    found = cell(s, ref, test, testbed, viewer=me)
    newest = found.attempts[-1]
    page = log_page(s, found.image, test, run=newest.run, attempt=newest.attempt, testbed=newest.testbed, viewer=me)
    product = found.image.split("@")[0]
    return render(request, "cell.html", found=found, page=page, product=product,
                  bisected=bisections.bisections(s, found.image, test, viewer=me),
                  may_quarantine=product in _may_quarantine(request, s, me), today=utcnow().date().isoformat())


@router.get("/versions/{ref}/log", response_class=HTMLResponse)
def log(ref: str, request: Request, s: SessionDep, me: Viewer, test: TestName,
        testbed: Annotated[str | None, Query(max_length=64)] = None,
        run: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
        attempt: Annotated[int | None, Query(ge=1, le=1000)] = None,
        offset: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None) -> HTMLResponse:
    page = log_page(s, ref, test, run=run, attempt=attempt, testbed=testbed, offset=offset, viewer=me)
    return render(request, "log.html", page=page)


@router.get("/versions/{ref}/artifacts/{filename}")
def artifact(ref: str, filename: str, s: SessionDep, me: Viewer) -> BlobResponse:
    row = queries.artifact_row(s, ref, filename, viewer=me)
    path = s.store.path(row.digest)
    if not path.is_file():
        raise CorruptBlobError(f"the artifact {row.filename} ({row.digest}) is missing from the store")
    return BlobResponse(path, filename=row.filename, media_type="application/octet-stream",
                        headers={"ETag": f'"{row.digest.removeprefix("sha256:")}"'})


@router.post("/versions/{ref}/promote")
async def promote(ref: str, request: Request, s: SessionDep, me: Viewer) -> Response:
    form = await _form(request)
    check_form(request, form.get("csrf", ""))
    reason, force = form.get("reason", "").strip(), form.get("force") == "on"
    if force and not reason:
        raise UsageError("a forced promotion needs a reason")
    done = await run_in_threadpool(gating.promote, s, ref, force=force, reason=reason, by=me)
    row = gating.promotion_row(done)
    return RedirectResponse(f"/versions/{quote(row.image, safe='@')}?promoted=true", status_code=303)


def _promoted_note(label: str, state: str, gate: gating.GateStatus) -> str:
    """What the page says after a promotion: from the catalog, never from the link (which anyone can write)."""
    if state != "stable":
        return ""
    also = [a.image for a in gate.architectures if a.image]
    return f"promoted {label} to stable" + (f" with {', '.join(also)}" if also else "") + "; see the audit trail"


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(run_id: int, request: Request, s: SessionDep, me: Viewer) -> HTMLResponse:
    return render(request, "run.html", view=runview.run_view(s, _run_id(run_id), viewer=me))


@router.get("/runs/{run_id}/progress", response_class=HTMLResponse)
def run_progress(run_id: int, request: Request, s: SessionDep, me: Viewer) -> HTMLResponse:
    """The part of the run page that changes while it runs (fetched by the page's script)."""
    return render(request, "run_progress.html", view=runview.run_view(s, _run_id(run_id), viewer=me))


@router.get("/runs/{run_id}/live/{key}", response_class=HTMLResponse)
def live_log(run_id: int, key: Annotated[str, FastPath(min_length=8, max_length=128)], request: Request,
             s: SessionDep, me: Viewer) -> HTMLResponse:
    """The end of a running job's live log (as a worker streams it); the page reloads while the run runs."""
    view = runview.run_view(s, _run_id(run_id), viewer=me)
    job = next((j for j in view.live if j.key == key), None)
    if job is None:
        raise UnknownReferenceError(f"run {run_id} has no running job {key[:40]!r} (it may have ended: its "
                                    "attempt has the log)")
    start = max(0, job.size - PAGE)
    text = livelogs.read(s, run_id, key, start, viewer=me, limit=PAGE).decode("utf-8", "replace")
    return render(request, "live.html", view=view, job=job, text=text, start=start)


@router.get("/runs/{run_id}/reproduce.sh", response_class=PlainTextResponse)
def reproducer(run_id: int, request: Request, s: SessionDep, me: Viewer) -> PlainTextResponse:
    server = str(request.base_url).rstrip("/")
    return PlainTextResponse(runview.reproducer(s, _run_id(run_id), server, viewer=me), headers=HEADERS)


@router.get("/history/{product}", response_class=HTMLResponse)
def test_history(product: str, request: Request, s: SessionDep, me: Viewer, test: TestName) -> HTMLResponse:
    found = history.history(s, product, test, viewer=me)
    return render(request, "history.html", h=found, plot=history_svg(found.points))


@router.get("/compare", response_class=HTMLResponse)
def comparison(request: Request, s: SessionDep, me: Viewer, before: Annotated[str, Query(max_length=200)],
               after: Annotated[str, Query(max_length=200)]) -> HTMLResponse:
    return render(request, "compare.html", c=compare(s, before, after, viewer=me))


def _may_quarantine(request: Request, s: Session, me: Principal) -> list[str]:
    """The products ``me`` may quarantine tests of (none on the local, read-only dashboard)."""
    if request.app.state.web_local:
        return []
    return [p.name for p in products.listing(s, by=me) if me.may(Scope.PROMOTE, p.namespace)]


@router.get("/flaky", response_class=HTMLResponse)
def flaky(request: Request, s: SessionDep, me: Viewer, since: Annotated[str, Query(max_length=16)] = "30d",
          name: Annotated[str | None, Query(max_length=64)] = None,
          added: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
          lifted: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> HTMLResponse:
    entries = quarantines.entries(s, viewer=me, lifted=True)
    done = ""  # said from the entry itself, never from the link
    for e in entries:
        if e.id is not None and e.id == added:
            done = f"quarantined {e.test} on {e.product} until {e.expires.isoformat()} (#{e.id})"
        if e.id is not None and e.id == lifted and e.lifted:
            done = f"lifted quarantine #{e.id} ({e.test} on {e.product})"
    return render(request, "flaky.html", since=since, rows=flakiness.flaky(s, name or None, duration_arg(since),
                                                                         viewer=me),
                  entries=entries, may=_may_quarantine(request, s, me), done=done,
                  today=utcnow().date().isoformat())


@router.post("/quarantine")
async def quarantine_add(request: Request, s: SessionDep, me: Viewer) -> Response:
    form = await _form(request)
    check_form(request, form.get("csrf", ""))
    try:
        expires = date.fromisoformat(form.get("expires", ""))
    except ValueError:
        raise UsageError("expires must be a date (YYYY-MM-DD)") from None
    beds = [b.strip() for b in form.get("testbeds", "").split(",") if b.strip()]
    try:
        asked = quarantines.QuarantineRequest(product=form.get("product", ""), test=form.get("test", "").strip(),
                                              tracker=form.get("tracker", "").strip(), expires=expires,
                                              mode="skip" if form.get("mode") == "skip" else "warn",
                                              testbeds=beds or None, reason=form.get("reason", "").strip())
    except ValidationError as exc:
        raise UsageError("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
    row = await run_in_threadpool(quarantines.add, s, asked, by=me)
    return RedirectResponse(f"/flaky?added={row.id}", status_code=303)


@router.post("/quarantine/{entry_id}/lift")
async def quarantine_lift(entry_id: int, request: Request, s: SessionDep, me: Viewer) -> Response:
    form = await _form(request)
    check_form(request, form.get("csrf", ""))
    row = await run_in_threadpool(quarantines.lift, s, entry_id, form.get("reason", "").strip(), by=me)
    return RedirectResponse(f"/flaky?lifted={row.id}", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, me: Viewer) -> HTMLResponse:
    return render(request, "login.html", error="")


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, s: SessionDep) -> Response:
    if request.app.state.web_local:
        return error_page(request, 403, "the local dashboard needs no sign-in: it shows this home read-only")
    check_origin(request)  # no signing a browser in from another site
    secret = (await _form(request)).get("token", "").strip()
    try:
        who = await run_in_threadpool(tokens.authenticate, s, secret or None)
    except ImageciError as exc:
        who, problem = None, str(exc)
    else:
        problem = "" if who else "paste an API token (ici_…)"
    if who is None:
        return render(request, "login.html", 401, error=problem)
    out = RedirectResponse("/", status_code=303)
    out.set_cookie(COOKIE, secret, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                   path="/", max_age=30 * 86400)
    return out


@router.post("/logout")
async def logout(request: Request) -> Response:
    check_form(request, (await _form(request)).get("csrf", ""))
    out = RedirectResponse("/", status_code=303)
    out.delete_cookie(COOKIE, path="/")
    return out


def _run_id(run_id: int) -> int:
    if not 1 <= run_id <= MAX_ID:
        raise UnknownReferenceError(f"no run {run_id}")
    return run_id


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the first of each), at most 64 KiB."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        raise UsageError("send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise UsageError("the form is larger than 64 KiB")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read the form: {exc}") from None
    return {k: v[0] for k, v in fields.items()}
