"""API tokens: made here, shown once, kept only as the sha256 of their secret.

A secret is ``ici_`` + 43 characters of URL-safe base64: 256 random bits. With
that much entropy a plain sha256 is the right way to keep it (a slow password
hash buys nothing and would cost every request). Authentication looks the hash
up with one indexed read (``store.lookups.token``).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from pydantic import BaseModel

from imageci.app.access import Principal, Scope, check_name, parse_scopes
from imageci.app.operations import NoArgs, operation
from imageci.app.session import Session
from imageci.errors import Unauthenticated, UsageError
from imageci.store import lookups
from imageci.store.states import CHANNELS, utcnow

PREFIX = "ici_"


class TokenRow(BaseModel):
    name: str
    namespace: str
    scopes: list[str]
    channel: str | None
    created: datetime
    created_by: str
    expires: datetime | None
    revoked: datetime | None


class NewToken(BaseModel):
    secret: str  # shown once; only its sha256 is kept
    token: TokenRow


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(t: lookups.TokenInfo) -> TokenRow:
    return TokenRow(name=t.name, namespace=t.namespace, scopes=t.scopes.split(","), channel=t.channel,
                    created=t.created_at, created_by=t.created_by, expires=t.expires_at, revoked=t.revoked_at)


def create(session: Session, name: str, namespace: str, scopes: str, *, expires: timedelta | None = None,
           channel: str | None = None, by: Principal) -> NewToken:
    """A new token of ``namespace`` with ``scopes`` (comma-separated); a ``channel`` binds a read token
    to one channel (a follower). ``by`` must be an admin of that namespace."""
    from imageci.store.models import Token

    check_name(name, "token name")
    check_name(namespace, "namespace")
    wanted = parse_scopes(scopes)
    by.require(Scope.ADMIN, namespace, f"create tokens in namespace {namespace!r}")
    if channel is not None:
        if channel not in CHANNELS:
            raise UsageError(f"unknown channel {channel!r}; channels: {', '.join(CHANNELS)}")
        if wanted != {Scope.READ}:
            raise UsageError("a token bound to a channel is a follower's: its only scope is 'read'")
    if expires is not None and expires <= timedelta(0):
        raise UsageError("a token's lifetime must be positive")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    session.catalog.add_token(Token(name=name, namespace=namespace, scopes=",".join(sorted(wanted)),
                                    channel=channel, secret_sha256=digest(secret), created_at=now,
                                    created_by=by.name, expires_at=now + expires if expires else None))
    info = lookups.token(session.catalog.reader(), digest(secret))
    assert info is not None
    return NewToken(secret=secret, token=_row(info))


def revoke(session: Session, name: str, *, by: Principal) -> TokenRow:
    """Revoke the token ``name``: every later request with it is refused (exit 9, HTTP 401)."""
    found = [t for t in lookups.tokens(session.reader) if t.name == name]
    if not found:
        raise UsageError(f"no token named {name!r}")
    by.require(Scope.ADMIN, found[0].namespace, f"revoke tokens in namespace {found[0].namespace!r}")
    session.catalog.revoke_token(name, utcnow())
    return _row(next(t for t in lookups.tokens(session.catalog.reader()) if t.name == name))


def listing(session: Session, *, by: Principal) -> list[TokenRow]:
    """The tokens ``by`` administers (never their secrets)."""
    return [_row(t) for t in lookups.tokens(session.reader) if by.may(Scope.ADMIN, t.namespace)]


def authenticate(session: Session, secret: str | None) -> Principal | None:
    """The principal a token secret stands for; None without one (anonymous). An unknown, expired or
    revoked token raises Unauthenticated, saying which."""
    if not secret:
        return None
    if not secret.startswith(PREFIX):
        raise Unauthenticated("not an imageci token (they start with 'ici_')")
    info = lookups.token(session.reader, digest(secret))
    if info is None:  # looked up by the hash of a 256-bit secret: nothing to learn from timing
        raise Unauthenticated("unknown token")
    now = utcnow()
    if info.revoked_at is not None:
        raise Unauthenticated(f"token {info.name!r} was revoked at {info.revoked_at.isoformat(timespec='seconds')}")
    if info.expires_at is not None and info.expires_at <= now:
        raise Unauthenticated(f"token {info.name!r} expired at {info.expires_at.isoformat(timespec='seconds')}")
    return Principal(name=info.name, namespace=info.namespace,
                     scopes=frozenset(Scope(s) for s in info.scopes.split(",")), channel=info.channel)


class WhoAmI(BaseModel):
    name: str
    namespace: str | None
    scopes: list[str]
    channel: str | None
    anonymous: bool


class TokenRequest(BaseModel):
    name: str
    namespace: str
    scopes: str = "read"  # comma-separated: read,publish,test,promote,admin
    channel: str | None = None
    expires: str | None = None  # a duration, e.g. 90d


class TokenArgs(BaseModel):
    body: TokenRequest


class TokenName(BaseModel):
    name: str


@operation("GET", "/whoami", request=NoArgs, answer=WhoAmI, tag="access")
def whoami(_session: Session, _req: NoArgs, by: Principal) -> WhoAmI:
    """The principal this request acts as (from its token; anonymous without one)."""
    return WhoAmI(name=by.name, namespace=by.namespace, scopes=sorted(by.scopes), channel=by.channel,
                  anonymous=by.anonymous)


@operation("GET", "/tokens", request=NoArgs, answer=list[TokenRow], tag="access", needs_token=True,
           name="token_list")
def token_list(session: Session, _req: NoArgs, by: Principal) -> list[TokenRow]:
    """The tokens of the namespaces the caller administers (never their secrets)."""
    return listing(session, by=by)


@operation("POST", "/tokens", request=TokenArgs, answer=NewToken, tag="access", status=201, needs_token=True,
           name="token_create")
def token_create(session: Session, req: TokenArgs, by: Principal) -> NewToken:
    """A new token (admin of its namespace); its secret is in this response and nowhere else."""
    from imageci.definitions.durations import duration_arg

    b = req.body
    return create(session, b.name, b.namespace, b.scopes, channel=b.channel, by=by,
                  expires=duration_arg(b.expires) if b.expires else None)


@operation("DELETE", "/tokens/{name}", request=TokenName, answer=TokenRow, tag="access", needs_token=True,
           name="token_revoke")
def token_revoke(session: Session, req: TokenName, by: Principal) -> TokenRow:
    """Revoke a token (admin of its namespace): requests with it are refused from now on."""
    return revoke(session, req.name, by=by)
