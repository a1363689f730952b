"""Products: their namespace and whether they are public (readable without a token)."""

from __future__ import annotations

from pydantic import BaseModel

from imageci.app.access import LOCAL, Principal, Scope, check_name
from imageci.app.session import Session


class ProductRow(BaseModel):
    name: str
    namespace: str
    public: bool


def configure(session: Session, name: str, *, namespace: str | None = None, public: bool | None = None,
              by: Principal = LOCAL) -> ProductRow:
    """Move ``name`` to ``namespace`` and/or make it public or private. ``by`` must administer the
    product's namespace (and the new one)."""
    if namespace is not None:
        check_name(namespace, "namespace")
    current = session.catalog.set_product(name)  # raises for an unknown product
    by.require(Scope.ADMIN, current.namespace, f"configure product {name!r}")
    if namespace is not None:
        by.require(Scope.ADMIN, namespace, f"move product {name!r} to namespace {namespace!r}")
    done = session.catalog.set_product(name, namespace=namespace, public=public)
    return ProductRow(name=done.name, namespace=done.namespace, public=done.public)
