"""The catalog's vocabulary without its tables: version states, run statuses,
the transitions and channels, artifact kinds and UTC time. Nothing here imports
SQLAlchemy, so the query commands' read path (``store.reading``) starts fast."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(dt: datetime) -> datetime:
    """SQLite drops the zone; every timestamp we write is UTC."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class State(enum.StrEnum):
    CREATED = "created"
    TESTING = "testing"
    STABLE = "stable"
    INACTIVE = "inactive"
    DELETED = "deleted"  # its bytes were deleted by retention; its record, events and attempts are kept


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"  # ended normally (whatever its verdicts)
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM: ended, finished attempts recorded
    ABORTED = "aborted"  # the process died (kill -9, crash, power loss); found and marked later


# The only transitions the catalog allows.
TRANSITIONS: dict[State, set[State]] = {
    State.CREATED: {State.TESTING, State.INACTIVE},
    State.TESTING: {State.STABLE, State.INACTIVE},
    State.STABLE: {State.INACTIVE},
    State.INACTIVE: {State.TESTING, State.DELETED},  # re-publish for another round of testing; retention
    State.DELETED: set(),
}

# A channel lists the versions in these states, newest serial first.
CHANNELS: dict[str, set[State]] = {
    "testing": {State.TESTING, State.STABLE},
    "stable": {State.STABLE},
}


def channels_of(state: str) -> list[str]:
    """The channels a version in ``state`` is on."""
    return [c for c, states in CHANNELS.items() if State(state) in states]


# Every product belongs to a namespace; tokens are bound to one (app.access).
DEFAULT_NAMESPACE = "default"

# Artifact kinds a version carries besides its image bytes ("rootfs", "manifest", "build-log", VM disks).
ROOTFS = "rootfs"
# A disk image version (build.bootdisk, or a qcow2 imported): the disk is its bytes (the version's digest);
# its rootfs artifact is the root partition's tree.
DISK = "disk"  # disk.qcow2
SUITE = "suite"  # the test suite as built with, a tar snapshot (store.snapshots)
OCI_CONFIG = "oci-config"  # the image's runtime configuration, an OCI config's "config" object (JSON)
MULTIARCH = "multiarch"  # build info: {"group": hash of every architecture's inputs, "products": {arch: name}}
# The LXD/Incus form of a version (build.lxdimage), listed by its channels' simplestreams feeds.
LXD_METADATA = "lxd-metadata"  # lxd.tar.xz: metadata.yaml
INCUS_METADATA = "incus-metadata"  # incus.tar.xz: the same bytes, under the name Incus looks for
SQUASHFS = "squashfs"  # root.squashfs
# Read from the image's bytes without running it (supply/): its packages and its files.
BOM = "bom"  # bom.json: supply.packages.Bom
FILE_INDEX = "file-index"  # files.json.gz: supply.files.FileIndex
COMPLIANCE = "compliance"  # compliance.json: supply.compliance.ComplianceResult of the built-in content
REPRO = "repro"  # repro.json: the newest `imageci repro` result (app.repro.ReproResult)
REPRO_REPORT = "repro-report"  # repro-report.txt: diffoscope's report when the rebuild differed
# made from the image's bytes where they are stored; a client's are never uploaded nor taken
DERIVED = frozenset({BOM, FILE_INDEX, COMPLIANCE, REPRO, REPRO_REPORT})


@dataclass(frozen=True)
class LiveMeta:
    """Who writes a live log: the job's key, its test and testbed, and the worker."""

    key: str
    test: str
    testbed: str
    worker: str | None
