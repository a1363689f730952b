"""The dashboard on a FastAPI application: its pages, its static files and its
error pages. ``imageci serve`` adds it next to the API (tokens as the API's);
``imageci dashboard`` serves it alone for the local home, read-only."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from imageci.config import Settings
from imageci.web import pages
from imageci.web.render import environment


def add_dashboard(app: FastAPI, settings: Settings, *, local: bool = False) -> None:
    app.state.web_env = environment()
    app.state.web_local = local
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")


def is_page(request: Request) -> bool:
    """Whether the request was for a page (its errors are HTML pages too)."""
    return bool(getattr(request.state, "html", False))


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return pages.error_page(request, status, message)


def page_for(request: Request, status: int, message: str, any_browser: bool) -> Response | None:
    """The error page for a request of a page (or, ``any_browser``, of anything a browser asked for)."""
    if is_page(request) or any_browser:
        return error_page(request, status, message)
    return None
