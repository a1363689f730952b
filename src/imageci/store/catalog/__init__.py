"""The catalog: products, versions, channels, audited state transitions, runs and test attempts,
quarantines, consumers, tokens, schedules, vulnerability feeds, retention, bisections and known failures.
One class over SQLAlchemy sessions, assembled from one module per topic; callers get ORM objects
detached from their session (``expire_on_commit=False``)."""

from __future__ import annotations

from imageci.store.catalog.base import (
    CatalogBase,
    Evidence,
    EvidenceChanged,
    NewArtifact,
    SqlAlchemyReader,
    TransitionError,
    VersionDeleted,
    current_actor,
)
from imageci.store.catalog.bisections import BisectionRows
from imageci.store.catalog.consumers import ConsumerRows
from imageci.store.catalog.holds import HoldRows
from imageci.store.catalog.knownfailures import KnownFailureRows
from imageci.store.catalog.promotion import PromotionRows
from imageci.store.catalog.quarantines import QuarantineRows
from imageci.store.catalog.retention import RetentionRows
from imageci.store.catalog.runs import RunRows
from imageci.store.catalog.schedules import ScheduleRows
from imageci.store.catalog.shared import SharedRows
from imageci.store.catalog.tokens import TokenRows
from imageci.store.catalog.versions import VersionRows
from imageci.store.catalog.vulns import VulnRows

__all__ = ["Catalog", "Evidence", "EvidenceChanged", "NewArtifact", "SqlAlchemyReader", "TransitionError",
           "VersionDeleted", "current_actor"]


class Catalog(VersionRows, PromotionRows, RunRows, QuarantineRows, ConsumerRows, TokenRows, ScheduleRows, VulnRows,
              RetentionRows, BisectionRows, KnownFailureRows, SharedRows, HoldRows, CatalogBase):
    """The catalog's every call (each topic's module holds its own)."""
