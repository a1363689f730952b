"""What the catalog answers about known failures (portable SQL over a ``store.reading.Reader``): how
many failing attempts each tracker labelled, per product and test, since a time."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from imageci.store.reading import Reader, stamp


class KnownCount(NamedTuple):
    product: str
    namespace: str
    public: bool
    test_id: str
    tracker: str
    failures: int
    last: datetime


# The labelled attempts come from the partial index ix_attempts_known (only those), never every attempt.
# (Materialized first: with the product's name given and no statistics, a planner would otherwise read that
# product's every attempt.)
KNOWN = ("WITH labelled AS MATERIALIZED (SELECT id, image_digest, test_id, known, started_at FROM attempts "
         "WHERE known IS NOT NULL AND started_at >= :since) "
         "SELECT p.name, p.namespace, p.public, a.test_id, a.known, COUNT(DISTINCT a.id), MAX(a.started_at) "
         "FROM labelled a JOIN versions v ON v.digest = a.image_digest JOIN products p ON p.id = v.product_id "
         "{where} "
         "GROUP BY p.name, p.namespace, p.public, a.test_id, a.known ORDER BY p.name, a.test_id, a.known")


def known_counts(reader: Reader, name: str | None, since: datetime) -> list[KnownCount]:
    """Failing attempts labelled with a known failure since ``since`` (of product ``name``), counted by
    product, test and tracker."""
    where = "WHERE p.name = :name" if name is not None else ""
    params = {"since": reader.time(since), **({"name": name} if name is not None else {})}
    return [KnownCount(str(product), str(ns), bool(public), str(test), str(known), int(n), stamp(last))
            for product, ns, public, test, known, n, last in reader.rows(KNOWN.format(where=where), params)]
