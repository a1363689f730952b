"""What a version carries, read from the catalog and the store only: its
definition (the stored text), its suite (a stored snapshot), its image
configuration and its architecture, and the versions built with it for the other
architectures of its definition. A run needs no file from the machine that
built the version.

Versions registered before suites were stored fall back to the definition's
path recorded at build time, if it still exists here.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from imageci.app.session import Session
from imageci.definitions.image import Gate, ImageDefinition, load_definition, parse_definition
from imageci.definitions.suite import Suite, load_suite
from imageci.errors import UsageError
from imageci.store import gatelookups
from imageci.store.gatelookups import VersionRecord
from imageci.store.snapshots import unpack_tree
from imageci.store.states import DISK, MULTIARCH, OCI_CONFIG, SUITE, State

if TYPE_CHECKING:  # (a run's: what a gate never reads)
    from imageci.formats.oci import ImageConfig

log = logging.getLogger("imageci.app")

class Held(Protocol):
    """One of a version's artifacts (``store.models.Artifact``, ``store.lookups.ArtifactInfo``)."""

    @property
    def kind(self) -> str: ...

    @property
    def digest(self) -> str: ...


class Carried(Protocol):
    """A version and what it carries, as this module reads it: an ORM ``store.models.Version`` (a run's) or a
    ``store.gatelookups.VersionRecord`` (read without the ORM: a gate's)."""

    @property
    def id(self) -> int: ...

    @property
    def name(self) -> str: ...  # its product's

    @property
    def serial(self) -> str: ...

    @property
    def digest(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def architecture(self) -> str: ...

    @property
    def definition(self) -> str | None: ...

    @property
    def build_info(self) -> str | None: ...

    @property
    def artifacts(self) -> Sequence[Held]: ...


def label_of(version: Carried) -> str:
    """How people name a version: NAME@SERIAL."""
    return f"{version.name}@{version.serial}"


def definition_of(version: Carried) -> ImageDefinition | None:
    """The definition the version was built from (as stored with it)."""
    if not version.definition:
        return None
    return parse_definition(version.definition, f"{label_of(version)}:image.yaml")


def _legacy_suite(version: Carried) -> Path | None:
    path = json.loads(version.build_info or "{}").get("definition_path")
    if path and Path(path).exists():
        return load_definition(Path(path)).suite_dir()
    return None


def suite_dir_of(session: Session, version: Carried, override: Path | None = None) -> Path:
    """The suite to run: ``override``, else the version's stored snapshot (extracted once)."""
    if override is not None:
        return override
    stored = next((a for a in version.artifacts if a.kind == SUITE), None)
    if stored is not None:
        return unpack_tree(session.store, stored.digest, session.settings.home / "suites")
    suite = _legacy_suite(version)
    if suite is None:
        raise UsageError(f"{label_of(version)}: no test suite known (its definition names none); pass --suite DIR")
    return suite


_SUITES: OrderedDict[tuple[Path, str], Suite] = OrderedDict()  # stored suites, loaded: a snapshot never changes
_SUITES_LOCK = threading.Lock()
SUITES_KEPT = 32


def suite_of(session: Session, version: Carried, override: Path | None = None, *, warn: bool = True) -> Suite:
    """The suite to run (``override``, else the version's stored snapshot). A stored one is loaded once per
    process and snapshot digest (a server's pages and gates read the same suites again and again)."""
    stored = next((a.digest for a in version.artifacts if a.kind == SUITE), None) if override is None else None
    key = (session.settings.home, stored or "")
    with _SUITES_LOCK:
        suite = _SUITES.get(key) if stored else None
        if suite is not None:
            _SUITES.move_to_end(key)
    if suite is None:
        suite = load_suite(suite_dir_of(session, version, override))
        if stored:
            with _SUITES_LOCK:
                _SUITES[key] = suite
                while len(_SUITES) > SUITES_KEPT:
                    _SUITES.popitem(last=False)
    if warn:
        for line in suite.warnings:
            log.warning("%s", line)
    return suite


def imported(version: Carried) -> bool:
    """Built elsewhere and brought in by ``imageci import`` (it has no definition)."""
    return not version.definition and json.loads(version.build_info or "{}").get("builder") == "imageci import"


def gate_of(version: Carried) -> Gate | None:
    """The definition's gate. An imported version that carries a suite has the default gate (every
    test of that suite, on the sandbox; an imported disk image, booted on qemu); one without a suite
    has none."""
    definition = definition_of(version)
    if definition is None:
        if not (imported(version) and any(a.kind == SUITE for a in version.artifacts)):
            return None
        return Gate(testbeds=["qemu"]) if any(a.kind == DISK for a in version.artifacts) else Gate()
    return definition.tests.gate if definition.tests is not None else None


def keep_of(version: Carried) -> int:
    definition = definition_of(version)
    return definition.keep if definition is not None else int(ImageDefinition.model_fields["keep"].default)


def config_of(session: Session, version: Carried) -> ImageConfig:
    """The image's runtime configuration (its stored OCI config; imageci's default for older versions)."""
    from imageci.app.passes import image_config_of  # (a run's: what a gate never reads)

    stored = next((a.digest for a in version.artifacts if a.kind == OCI_CONFIG), None)
    return image_config_of(session.store, stored, version.name, version.digest, label_of(version))


@dataclass(frozen=True)
class Sibling:
    """The version built with another from the same definition, for another architecture (None:
    none is built, or it was retired)."""

    architecture: str
    product: str
    version: VersionRecord | None


def siblings(session: Session, version: Carried) -> list[Sibling]:
    """The other architectures' versions of ``version``'s build group (a definition that lists
    ``architectures``): the newest active version of each NAME-ARCH whose build inputs were hashed
    into the same group. Empty for a single-architecture version."""
    group = json.loads(version.build_info or "{}").get(MULTIARCH)
    if not isinstance(group, dict) or not isinstance(group.get("products"), dict):
        return []
    active = {st.value for st in State} - {State.INACTIVE.value, State.DELETED.value}
    out = []
    for arch, product in sorted(group["products"].items()):
        if arch == version.architecture or not isinstance(product, str):
            continue
        found = [v for v in gatelookups.records(session.reader, product, active)
                 if json.loads(v.build_info or "{}").get(MULTIARCH, {}).get("group") == group.get("group")]
        out.append(Sibling(arch, product, max(found, key=lambda v: v.serial) if found else None))
    return out
