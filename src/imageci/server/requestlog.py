"""The access log: one JSON line per request, with an id the response carries."""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_log = logging.getLogger("imageci.access")
SECRET_IN_PATH = re.compile(r"ici_[A-Za-z0-9_-]+")  # a feed URL's token is a credential: never logged


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


def log_to_stderr() -> None:
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
