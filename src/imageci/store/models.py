"""Catalog tables (SQLAlchemy 2). The schema is owned by the Alembic migrations
in ``store/migrations``; these classes must match the newest revision."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from imageci.store.states import (
    CHANNELS,
    DEFAULT_NAMESPACE,
    MULTIARCH,
    OCI_CONFIG,
    ROOTFS,
    SUITE,
    TRANSITIONS,
    RunStatus,
    State,
    as_utc,
    channels_of,
    utcnow,
)

# The catalog's vocabulary lives in store.states (no SQLAlchemy); re-exported for the ORM's users.
__all__ = ["CHANNELS", "DEFAULT_NAMESPACE", "MULTIARCH", "OCI_CONFIG", "ROOTFS", "SUITE", "TRANSITIONS", "RunStatus",
           "State", "as_utc", "channels_of", "utcnow", "Artifact", "Attempt", "Base", "Event", "Product", "Push", "Run",
           "Quarantine", "Consumer", "Schedule", "Token", "Version", "VulnFeed", "VulnRecord", "Bisection",
           "KnownFailureRow", "LiveLogRow", "LiveChunk", "SiteKey", "label"]


class Base(DeclarativeBase):
    pass


class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    namespace: Mapped[str] = mapped_column(String(64), default=DEFAULT_NAMESPACE, index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)  # anyone may read it, without a token
    versions: Mapped[list[Version]] = relationship(back_populates="product", order_by="Version.serial")


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("product_id", "serial"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    serial: Mapped[str] = mapped_column(String(32))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    input_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    architecture: Mapped[str] = mapped_column(String(32), default="amd64")  # Debian architecture name
    state: Mapped[str] = mapped_column(String(16), default=State.CREATED.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    definition: Mapped[str | None] = mapped_column(Text)
    build_info: Mapped[str | None] = mapped_column(Text)  # JSON
    pinned: Mapped[str | None] = mapped_column(Text)  # why it is kept whatever retention says (None: not pinned)
    product: Mapped[Product] = relationship(back_populates="versions")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="version", cascade="all, delete-orphan")
    events: Mapped[list[Event]] = relationship(back_populates="version", order_by="Event.id")

    @property
    def name(self) -> str:
        """Its product's name (as ``store.gatelookups.VersionRecord`` has it: ``app.versions.Carried``)."""
        return self.product.name


def label(version: Version) -> str:
    """How people name a version: NAME@SERIAL."""
    return f"{version.product.name}@{version.serial}"


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(255))
    digest: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    version: Mapped[Version] = relationship(back_populates="artifacts")


class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    version: Mapped[Version] = relationship(back_populates="events")


class Push(Base):
    """A version pushed to a registry or OCI layout, as the destination answered (`imageci push`)."""

    __tablename__ = "pushes"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    destination: Mapped[str] = mapped_column(Text)
    manifest_digest: Mapped[str] = mapped_column(String(71))  # sha256:…
    actor: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_running", "status", "host"),)  # the runs still running here
    id: Mapped[int] = mapped_column(primary_key=True)
    image_digest: Mapped[str] = mapped_column(String(64), index=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    options: Mapped[str] = mapped_column(Text, default="{}")  # JSON
    exit_code: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    host: Mapped[str | None] = mapped_column(String(255))  # where the run's process ran
    owner: Mapped[str | None] = mapped_column(String(1024))  # its owner lock file (imageci.owners)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)  # a client's, over the API
    repeats: Mapped[int | None] = mapped_column(Integer)  # the run this one repeats (``imageci rerun``)


class Attempt(Base):
    """One execution of one test on one testbed for one image."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    image_digest: Mapped[str] = mapped_column(String(64), index=True)
    test_id: Mapped[str] = mapped_column(String(255), index=True)
    test_digest: Mapped[str] = mapped_column(String(64))
    testbed: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    log_digest: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)  # a client's, over the API
    worker: Mapped[str | None] = mapped_column(String(255))  # the Celery worker that ran it (None: the recorder)
    known: Mapped[str | None] = mapped_column(Text)  # the tracker of the known failure its log matched
    findings: Mapped[str | None] = mapped_column(Text)  # the machine's complaints in its window (JSON list)


class Token(Base):
    """An API token: only the sha256 of its secret is kept (the secret is shown once)."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    namespace: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(128))  # comma-separated
    channel: Mapped[str | None] = mapped_column(String(32))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Quarantine(Base):
    """A quarantine entry kept in the catalog for one product (`imageci quarantine add`, the API, the
    dashboard), with the same fields as a suite's quarantine.yaml entry; lifting keeps the row."""

    __tablename__ = "quarantines"
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    test: Mapped[str] = mapped_column(String(255))  # glob on test ids
    tracker: Mapped[str] = mapped_column(Text)
    expires: Mapped[date] = mapped_column(Date)  # the last day it applies
    mode: Mapped[str] = mapped_column(String(8))  # warn | skip
    testbeds: Mapped[str | None] = mapped_column(Text)  # JSON list of globs (None: every testbed)
    arch: Mapped[str | None] = mapped_column(Text)  # JSON list (None: every architecture)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    lifted_by: Mapped[str | None] = mapped_column(String(128))
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lift_reason: Mapped[str] = mapped_column(Text, default="")


class Consumer(Base):
    """A project that builds on a product and registers its suite (`imageci consumers add`): it runs on every
    version tested with its product's suite; a gating one blocks the promotion of a version it fails on when it
    passed on the current stable version. Its content is a stored snapshot (``snapshot``: the suite, and its
    wheelhouse if any), taken again whenever a run plans it; removing keeps the row."""

    __tablename__ = "consumers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    source: Mapped[str] = mapped_column(Text)  # a directory, or a git repository (path or URL)
    ref: Mapped[str | None] = mapped_column(String(255))  # git: the branch, tag or commit (None: a directory)
    subdir: Mapped[str | None] = mapped_column(Text)  # git: the suite's directory in the repository
    command: Mapped[str] = mapped_column(Text)
    setup: Mapped[str | None] = mapped_column(Text)
    wheelhouse: Mapped[str | None] = mapped_column(Text)  # a directory of wheels pip installs from, offline
    timeout: Mapped[int] = mapped_column(Integer)
    gating: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot: Mapped[str | None] = mapped_column(String(64))  # sha256 of the newest snapshot blob
    revision: Mapped[str | None] = mapped_column(String(64))  # git: the commit it was taken from
    snapshot_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    removed_by: Mapped[str | None] = mapped_column(String(128))
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Schedule(Base):
    """What `imageci scheduler` knows of one schedule (a definition's `schedule:`, or retention's): its cron
    expression, when it was first seen, the scheduled time it last fired for and how that went. A fire is
    claimed by moving ``fired_for`` forward (compare-and-set): two schedulers never fire the same time twice."""

    __tablename__ = "schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(1024), unique=True)  # pipeline:/abs/image.yaml | retention
    cron: Mapped[str] = mapped_column(String(255))
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fired_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(Text, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer)


class VulnFeed(Base):
    """A vulnerability feed imported from a file the user provided (`imageci vulndb import`): the
    Debian Security Tracker's JSON, or OSV records. Importing a feed of the same name again replaces
    its records, in one transaction."""

    __tablename__ = "vuln_feeds"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)  # debian-tracker | osv (or --name)
    format: Mapped[str] = mapped_column(String(16))  # debian-tracker | osv
    source: Mapped[str] = mapped_column(Text)  # the file's name as given
    sha256: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # records left out, with a warning each
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    imported_by: Mapped[str] = mapped_column(String(128))


class VulnRecord(Base):
    """What a feed says of one vulnerability in one source package of one release: open, resolved in
    a version, not affected, or undetermined (OSV: one row per affected range)."""

    __tablename__ = "vuln_records"
    __table_args__ = (Index("ix_vuln_records_release_package", "release", "package"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    feed_id: Mapped[int] = mapped_column(ForeignKey("vuln_feeds.id", ondelete="CASCADE"), index=True)
    vuln: Mapped[str] = mapped_column(String(64))  # CVE-2024-1234, DSA-5678-1, …
    aliases: Mapped[str] = mapped_column(Text, default="")  # space-separated
    package: Mapped[str] = mapped_column(String(255))  # the source package
    release: Mapped[str] = mapped_column(String(64))  # bookworm (tracker), Debian:12 (OSV)
    status: Mapped[str] = mapped_column(String(16))  # open | resolved | not-affected | undetermined
    introduced: Mapped[str | None] = mapped_column(String(128))  # OSV: first affected version (None: all)
    fixed: Mapped[str | None] = mapped_column(String(128))  # the first version with the fix (None: none yet)
    severity: Mapped[str] = mapped_column(String(32))  # unimportant | low | medium | high | critical | unknown
    description: Mapped[str] = mapped_column(Text, default="")


class Bisection(Base):
    """What one `imageci bisect` found: the version (bad end) and test it bisected, on which testbed, from
    which good version, its finding (``running`` until it ends; then ``culprit``, ``unreliable-ends``, …)
    and its whole result (JSON); the host and owner lock of the process that runs it."""

    __tablename__ = "bisections"
    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    test_id: Mapped[str] = mapped_column(String(255))
    testbed: Mapped[str] = mapped_column(String(64))
    good_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"))
    finding: Mapped[str] = mapped_column(String(32))
    result: Mapped[str] = mapped_column(Text)  # JSON: app.bisect.BisectResult
    actor: Mapped[str] = mapped_column(String(128), default="")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    host: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(512))


class KnownFailureRow(Base):
    """A known failure kept in the catalog for one product (`imageci known-failures add`): the same fields
    as a suite's known-failures.yaml entry; removing keeps the row."""

    __tablename__ = "known_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    test: Mapped[str] = mapped_column(String(255))  # glob on test ids
    pattern: Mapped[str] = mapped_column(Text)
    tracker: Mapped[str] = mapped_column(Text)
    retry: Mapped[int] = mapped_column(Integer, default=0)
    expires: Mapped[date | None] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    removed_by: Mapped[str | None] = mapped_column(String(128))
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LiveLogRow(Base):
    """A running job's live log (app/livelogs.py): in the catalog, so every replica of the server appends to
    and reads the same one."""

    __tablename__ = "live_logs"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_live_logs_run_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(128))
    test: Mapped[str] = mapped_column(String(255))
    testbed: Mapped[str] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    updated: Mapped[float] = mapped_column(Float)


class LiveChunk(Base):
    __tablename__ = "live_chunks"
    live_log_id: Mapped[int] = mapped_column(ForeignKey("live_logs.id", ondelete="CASCADE"), primary_key=True)
    offset: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class SiteKey(Base):
    """A secret every replica of the server shares (the dashboard's CSRF key), made once."""

    __tablename__ = "site_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class Hold(Base):
    """A failing test's testbed kept for its owner to enter (``--hold-on-failure``) until ``until``, a release,
    or ``gc`` once its holder process (``owner``) is gone."""

    __tablename__ = "holds"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, index=True)
    attempt_id: Mapped[int | None] = mapped_column(Integer)
    test: Mapped[str] = mapped_column(String(255))
    testbed: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(255))
    worker: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str] = mapped_column(String(1024))  # the holder's lock file (imageci.owners)
    pid: Mapped[int | None] = mapped_column(Integer)  # the holder's process, on its host
    enter: Mapped[str] = mapped_column(Text)  # the command that enters it, on its host
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    released_by: Mapped[str | None] = mapped_column(String(128))
    holder: Mapped[str | None] = mapped_column(String(128))  # on a worker: the token that serves it
    seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # its worker last asked for work
    release_asked: Mapped[str | None] = mapped_column(String(128))  # by whom (its worker removes it)


class HoldPipe(Base):
    """A person's terminal on a worker's held testbed, through the server: two byte streams (``up`` to the
    testbed, ``down`` from it) in the catalog, so any replica relays them."""

    __tablename__ = "hold_pipes"
    id: Mapped[int] = mapped_column(primary_key=True)
    hold_id: Mapped[int] = mapped_column(Integer, index=True)
    by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    taken: Mapped[bool] = mapped_column(Boolean, default=False)  # its worker has it
    up_size: Mapped[int] = mapped_column(Integer, default=0)
    down_size: Mapped[int] = mapped_column(Integer, default=0)
    up_closed: Mapped[bool] = mapped_column(Boolean, default=False)
    down_closed: Mapped[bool] = mapped_column(Boolean, default=False)


class HoldPipeChunk(Base):
    __tablename__ = "hold_pipe_chunks"
    pipe_id: Mapped[int] = mapped_column(ForeignKey("hold_pipes.id", ondelete="CASCADE"), primary_key=True)
    stream: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0 up, 1 down
    offset: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
