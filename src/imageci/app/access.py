"""Who is asking, and what they may see and do: one set of rules for every
interface. The CLI on the server's own machine acts as ``LOCAL`` (it holds the
catalog file; every namespace, every scope); the API acts for the principal of
the request's token, or ``ANONYMOUS`` without one.

- every product belongs to a namespace; a token belongs to one namespace and
  can never read private products of, publish to, test in or promote in
  another;
- scopes: ``read``, ``publish``, ``test``, ``promote``, ``admin`` (all of them,
  and managing the namespace's tokens); any scope reads its namespace;
- a follower's token (``read`` bound to a channel) sees only the versions on
  that channel;
- anonymous callers read only products marked public.

What a caller may not see answers as if it did not exist: the same
"unknown image" with no hints, so names never leak across namespaces.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from imageci.errors import Forbidden, UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.lookups import VersionInfo
from imageci.store.reading import Reader
from imageci.store.refs import ImageRef, parse_ref
from imageci.store.states import CHANNELS, State


class Scope(enum.StrEnum):
    READ = "read"
    PUBLISH = "publish"
    TEST = "test"
    PROMOTE = "promote"
    ADMIN = "admin"


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # namespaces and token names


def check_name(value: str, what: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise UsageError(f"bad {what} {value!r}: lowercase letters, digits, '.', '_' and '-', at most 63, "
                         "starting with a letter or digit")
    return value


def parse_scopes(text: str) -> frozenset[Scope]:
    """``read,test`` → the scopes; an unknown word is a usage error that lists the known ones."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in Scope.__members__.values()]
    if unknown or not words:
        raise UsageError(f"unknown scope(s) {', '.join(unknown) or '(none given)'}; scopes: "
                         f"{', '.join(s.value for s in Scope)}")
    return frozenset(Scope(w) for w in words)


@dataclass(frozen=True)
class Principal:
    name: str  # the audit actor of everything done with it
    namespace: str | None  # None: every namespace (the local operator)
    scopes: frozenset[Scope]
    channel: str | None = None  # a follower: only versions on this channel
    anonymous: bool = False

    def _in(self, namespace: str) -> bool:
        return not self.anonymous and (self.namespace is None or self.namespace == namespace)

    def sees_product(self, namespace: str, public: bool) -> bool:
        """May this principal know of a product in ``namespace`` (public or not)?"""
        return public or (self._in(namespace) and bool(self.scopes))

    def sees(self, namespace: str, public: bool, state: str) -> bool:
        """May this principal read a version of a product in ``namespace``, in ``state``?"""
        if self.channel is not None and State(state) not in CHANNELS[self.channel]:
            return False
        return public or (self._in(namespace) and bool(self.scopes))

    def may(self, scope: Scope, namespace: str) -> bool:
        """May this principal do ``scope`` in ``namespace``? (admin may do everything there)"""
        return self._in(namespace) and self.channel is None and (scope in self.scopes or Scope.ADMIN in self.scopes)

    def require(self, scope: Scope, namespace: str, what: str) -> None:
        if not self.may(scope, namespace):
            raise Forbidden(f"{self.name} may not {what}: it needs scope {scope.value!r} in namespace "
                            f"{namespace!r}")


LOCAL = Principal(name="local", namespace=None, scopes=frozenset(Scope))
ANONYMOUS = Principal(name="anonymous", namespace="", scopes=frozenset(), anonymous=True)


def resolve(reader: Reader, principal: Principal, ref: str) -> VersionInfo:
    """The version ``ref`` names, if ``principal`` may read it. A follower's bare ``NAME`` means its
    channel. Only the local operator is told close names; anyone else gets the same answer for
    "absent" and "not yours"."""
    r = parse_ref(ref)
    if principal.channel is not None and r.name and not r.serial and ":" not in ref:
        r = ImageRef(name=r.name, channel=principal.channel)
    try:
        version = lookups.resolve(reader, r)
    except UnknownReferenceError:
        if principal == LOCAL:
            raise
        raise UnknownReferenceError(f"unknown image reference {ref!r}") from None
    if not principal.sees(version.namespace, version.public, version.state):
        raise UnknownReferenceError(f"unknown image reference {ref!r}")
    return version
