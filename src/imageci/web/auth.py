"""Who a dashboard request acts for, and the CSRF check of its forms.

- A browser signs in with an API token through the login form: the token is
  kept in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS). A client
  may send ``Authorization: Bearer`` instead, as to the API. Without either,
  the request is anonymous and sees public products only.
- Every form that changes state carries a CSRF token: an HMAC of the cookie's
  token under a key kept in the catalog (``site_keys``, made once, shared by every replica), so a
  page of another site can neither read nor forge it; the form's ``Origin``,
  when the browser sends one, must be this server's.
- ``imageci dashboard`` serves the local home read-only: every request acts
  as the local operator, no form is shown and none is accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from fastapi import Request

from imageci.app.access import LOCAL, Principal
from imageci.app.session import Session
from imageci.errors import Forbidden, Unauthenticated
from imageci.server.deps import acting_as, header_secret

COOKIE = "imageci_token"


def site_key(request: Request) -> bytes:
    """The key of CSRF tokens: in the catalog (``site_keys``), made by whichever replica of the server asks
    first, so a form one replica served is accepted by another; read once per process."""
    state = request.app.state
    key: bytes | None = getattr(state, "web_key", None)
    if key is None:
        key = state.web_key = state.home.catalog.site_key("csrf")
    return key


async def viewer(request: Request, session: Session) -> Principal:
    """The principal of the request. A login cookie whose token expired or was revoked signs the browser
    out (it is anonymous, and the page says why); a bad Authorization header is refused, as by the API."""
    if request.app.state.web_local:
        request.state.principal = LOCAL.name
        return LOCAL
    header = header_secret(request.headers.get("authorization", ""))
    if header is not None:
        return await acting_as(request, session, header)
    try:
        return await acting_as(request, session, request.cookies.get(COOKIE) or None)
    except Unauthenticated as exc:
        request.state.signed_out = f"signed out: {exc}"
        return await acting_as(request, session, None)


def csrf_token(request: Request) -> str:
    """The CSRF token of this browser's sign-in ("" when not signed in with the cookie)."""
    token = request.cookies.get(COOKIE)
    if not token:
        return ""
    return hmac.new(site_key(request), f"csrf:{token}".encode(), hashlib.sha256).hexdigest()


def check_origin(request: Request) -> None:
    """Refuse a form posted from another site (when the browser says where it was posted from)."""
    origin = request.headers.get("origin")
    if origin:
        here, there = urlsplit(str(request.base_url)), urlsplit(origin)
        if (there.scheme, there.netloc) != (here.scheme, here.netloc):
            raise Forbidden("this form was posted from another site")


def check_form(request: Request, given: str) -> None:
    """Refuse a state-changing form without this sign-in's CSRF token, or posted from another origin."""
    if request.app.state.web_local:
        raise Forbidden("the local dashboard is read-only")
    check_origin(request)
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(expected, given):
        raise Forbidden("the form's CSRF token is missing or wrong: reload the page and submit it again")
