"""The catalog's quarantine entries."""

from __future__ import annotations

from sqlalchemy import select

from imageci.errors import UnknownReferenceError, UsageError
from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Product, Quarantine, as_utc, utcnow


class QuarantineRows(CatalogBase):
    def add_quarantine(self, entry: Quarantine, product: str) -> Quarantine:
        with self.session() as s:
            found = self._product(s, product)
            if found is None:
                raise UnknownReferenceError(f"unknown image {product!r}")
            entry.product_id = found.id
            s.add(entry)
            s.flush()
            return entry

    def lift_quarantine(self, entry_id: int, *, actor: str, reason: str) -> Quarantine:
        with self.session() as s:
            entry = s.get(Quarantine, entry_id)
            if entry is None:
                raise UnknownReferenceError(f"no quarantine entry {entry_id}")
            if entry.lifted_at is not None:
                raise UsageError(f"quarantine entry {entry_id} was lifted at "
                                 f"{as_utc(entry.lifted_at).isoformat(timespec='seconds')} by {entry.lifted_by}")
            entry.lifted_at, entry.lifted_by, entry.lift_reason = utcnow(), actor, reason
            return entry

    def quarantines(self, product: str | None = None, *, lifted: bool = False) -> list[tuple[Quarantine, str]]:
        """The catalog's quarantine entries (of ``product``), with their product's name, oldest first; lifted
        ones only with ``lifted``."""
        with self.session() as s:
            q = select(Quarantine, Product.name).join(Product, Product.id == Quarantine.product_id)
            if product is not None:
                q = q.where(Product.name == product)
            if not lifted:
                q = q.where(Quarantine.lifted_at.is_(None))
            return [(row, str(name)) for row, name in s.execute(q.order_by(Quarantine.id))]
