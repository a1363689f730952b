"""The catalog's known failures, per product; removing one keeps it, marked removed."""

from __future__ import annotations

from sqlalchemy import select

from imageci.errors import UnknownReferenceError, UsageError
from imageci.store.catalog.base import CatalogBase
from imageci.store.models import KnownFailureRow, Product, as_utc, utcnow


class KnownFailureRows(CatalogBase):
    def add_known_failure(self, entry: KnownFailureRow, product: str) -> KnownFailureRow:
        with self.session() as s:
            found = self._product(s, product)
            if found is None:
                raise UnknownReferenceError(f"unknown image {product!r}")
            entry.product_id = found.id
            s.add(entry)
            s.flush()
            return entry

    def remove_known_failure(self, entry_id: int, *, actor: str) -> KnownFailureRow:
        with self.session() as s:
            entry = s.get(KnownFailureRow, entry_id)
            if entry is None:
                raise UnknownReferenceError(f"no known failure {entry_id}")
            if entry.removed_at is not None:
                raise UsageError(f"known failure {entry_id} was removed at "
                                 f"{as_utc(entry.removed_at).isoformat(timespec='seconds')} by {entry.removed_by}")
            entry.removed_at, entry.removed_by = utcnow(), actor
            return entry

    def known_failures(self, product: str | None = None, *,
                       removed: bool = False) -> list[tuple[KnownFailureRow, str]]:
        """The catalog's known failures (of ``product``) with their product's name, oldest first; removed ones
        only with ``removed``."""
        with self.session() as s:
            q = select(KnownFailureRow, Product.name).join(Product, Product.id == KnownFailureRow.product_id)
            if product is not None:
                q = q.where(Product.name == product)
            if not removed:
                q = q.where(KnownFailureRow.removed_at.is_(None))
            return [(row, str(name)) for row, name in s.execute(q.order_by(KnownFailureRow.id))]
