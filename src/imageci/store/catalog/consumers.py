"""Registered consumers (projects downstream of an image) and their snapshots."""

from __future__ import annotations

from sqlalchemy import select, update

from imageci.errors import UnknownReferenceError, UsageError
from imageci.store.catalog.base import CatalogBase
from imageci.store.models import Consumer, Product, utcnow


class ConsumerRows(CatalogBase):
    def add_consumer(self, consumer: Consumer, product: str) -> Consumer:
        """Register ``consumer`` for ``product``; a name in use (even by a removed one) is refused."""
        with self.session() as s:
            found = self._product(s, product)
            if found is None:
                raise UnknownReferenceError(f"unknown image {product!r}")
            if s.scalar(select(Consumer.id).where(Consumer.name == consumer.name)) is not None:
                raise UsageError(f"a consumer named {consumer.name!r} exists (a removed one keeps its name); "
                                 "choose another name")
            consumer.product_id = found.id
            s.add(consumer)
            s.flush()
            return consumer

    def remove_consumer(self, name: str, *, actor: str) -> Consumer:
        with self.session() as s:
            row = s.scalar(select(Consumer).where(Consumer.name == name))
            if row is None or row.removed_at is not None:
                raise UnknownReferenceError(f"no consumer named {name!r}")
            row.removed_at, row.removed_by = utcnow(), actor
            return row

    def consumers(self, product: str | None = None, *, removed: bool = False) -> list[tuple[Consumer, str]]:
        """The registered consumers (of ``product``) with their product's name, by name; removed ones only
        with ``removed``."""
        with self.session() as s:
            q = select(Consumer, Product.name).join(Product, Product.id == Consumer.product_id)
            if product is not None:
                q = q.where(Product.name == product)
            if not removed:
                q = q.where(Consumer.removed_at.is_(None))
            return [(row, str(name)) for row, name in s.execute(q.order_by(Consumer.name))]

    def set_consumer_snapshot(self, consumer_id: int, snapshot: str, revision: str | None) -> None:
        with self.session() as s:
            s.execute(update(Consumer).where(Consumer.id == consumer_id)
                      .values(snapshot=snapshot, revision=revision, snapshot_at=utcnow()))
