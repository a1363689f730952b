"""Products: their namespace and whether they are public (readable without a token)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from imageci.app.access import LOCAL, Principal, Scope, check_name
from imageci.app.operations import Args, NoArgs, operation
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


class ProductChange(BaseModel):
    namespace: str | None = Field(default=None, max_length=63, description="move it to this namespace")
    public: bool | None = Field(default=None, description="readable without a token")


class ProductArgs(Args):
    name: str
    body: ProductChange


@operation("GET", "/products", request=NoArgs, answer=list[ProductRow], tag="images", name="product_list")
def product_list(session: Session, _req: NoArgs, by: Principal) -> list[ProductRow]:
    """The products the caller may know of: public ones and those of its namespace."""
    return listing(session, by=by)


@operation("PATCH", "/products/{name}", request=ProductArgs, answer=ProductRow, tag="access", needs_token=True,
           name="product_change")
def product_change(session: Session, req: ProductArgs, by: Principal) -> ProductRow:
    """Move a product to another namespace and/or make it public or private (admin of both)."""
    return configure(session, req.name, namespace=req.body.namespace, public=req.body.public, by=by)
