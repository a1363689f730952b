"""Products: their namespace and whether they are public (readable without a token)."""

from __future__ import annotations

from pydantic import BaseModel

from imageci.app.access import LOCAL, Principal, Scope, check_name
from imageci.app.session import Session
from imageci.errors import UnknownReferenceError
from imageci.store import lookups


class ProductRow(BaseModel):
    name: str
    namespace: str
    public: bool
    versions: int = 0


def listing(session: Session, *, by: Principal = LOCAL) -> list[ProductRow]:
    """The products ``by`` may know of: public ones, and those of its namespace."""
    return [ProductRow(name=n, namespace=ns, public=pub, versions=c)
            for n, ns, pub, c in lookups.products(session.reader) if by.sees_product(ns, pub)]


def configure(session: Session, name: str, *, namespace: str | None = None, public: bool | None = None,
              by: Principal = LOCAL) -> ProductRow:
    """Move ``name`` to ``namespace`` and/or make it public or private (neither: just show it). ``by``
    must administer the product's namespace (and the new one) to change it."""
    if namespace is not None:
        check_name(namespace, "namespace")
    known = {n: (ns, pub) for n, ns, pub, _c in lookups.products(session.reader)}
    if name not in known or not by.sees_product(*known[name]):
        raise UnknownReferenceError(f"unknown image {name!r}")  # one that exists elsewhere answers the same
    if namespace is None and public is None:  # nothing to change: what it is
        return next(row for row in listing(session, by=by) if row.name == name)
    current = session.catalog.set_product(name)
    by.require(Scope.ADMIN, current.namespace, f"configure product {name!r}")
    if namespace is not None:
        by.require(Scope.ADMIN, namespace, f"move product {name!r} to namespace {namespace!r}")
    done = session.catalog.set_product(name, namespace=namespace, public=public)
    return next(row for row in listing(session) if row.name == done.name)
