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
from dataclasses import dataclass
from pathlib import Path

from imageci.app.passes import image_config_of
from imageci.app.session import Session
from imageci.definitions.image import Gate, ImageDefinition, load_definition, parse_definition
from imageci.errors import UsageError
from imageci.formats.oci import ImageConfig
from imageci.store.models import MULTIARCH, OCI_CONFIG, SUITE, State, Version, label
from imageci.store.snapshots import unpack_tree
from imageci.store.states import DISK


def definition_of(version: Version) -> ImageDefinition | None:
    """The definition the version was built from (as stored with it)."""
    if not version.definition:
        return None
    return parse_definition(version.definition, f"{label(version)}:image.yaml")


def _legacy_suite(version: Version) -> Path | None:
    path = json.loads(version.build_info or "{}").get("definition_path")
    if path and Path(path).exists():
        return load_definition(Path(path)).suite_dir()
    return None


def suite_dir_of(session: Session, version: Version, override: Path | None = None) -> Path:
    """The suite to run: ``override``, else the version's stored snapshot (extracted once)."""
    if override is not None:
        return override
    stored = next((a for a in version.artifacts if a.kind == SUITE), None)
    if stored is not None:
        return unpack_tree(session.store, stored.digest, session.settings.home / "suites")
    suite = _legacy_suite(version)
    if suite is None:
        raise UsageError(f"{label(version)}: no test suite known (its definition names none); pass --suite DIR")
    return suite


def imported(version: Version) -> bool:
    """Built elsewhere and brought in by ``imageci import`` (it has no definition)."""
    return not version.definition and json.loads(version.build_info or "{}").get("builder") == "imageci import"


def gate_of(version: Version) -> Gate | None:
    """The definition's gate. An imported version that carries a suite has the default gate (every
    test of that suite, on the sandbox; an imported disk image, booted on qemu); one without a suite
    has none."""
    definition = definition_of(version)
    if definition is None:
        if not (imported(version) and any(a.kind == SUITE for a in version.artifacts)):
            return None
        return Gate(testbeds=["qemu"]) if any(a.kind == DISK for a in version.artifacts) else Gate()
    return definition.tests.gate if definition.tests is not None else None


def keep_of(version: Version) -> int:
    definition = definition_of(version)
    return definition.keep if definition is not None else int(ImageDefinition.model_fields["keep"].default)


def config_of(session: Session, version: Version) -> ImageConfig:
    """The image's runtime configuration (its stored OCI config; imageci's default for older versions)."""
    stored = next((a.digest for a in version.artifacts if a.kind == OCI_CONFIG), None)
    return image_config_of(session.store, stored, version.product.name, version.digest, label(version))


@dataclass(frozen=True)
class Sibling:
    """The version built with another from the same definition, for another architecture (None:
    none is built, or it was retired)."""

    architecture: str
    product: str
    version: Version | None


def siblings(session: Session, version: Version) -> list[Sibling]:
    """The other architectures' versions of ``version``'s build group (a definition that lists
    ``architectures``): the newest active version of each NAME-ARCH whose build inputs were hashed
    into the same group. Empty for a single-architecture version."""
    group = json.loads(version.build_info or "{}").get(MULTIARCH)
    if not isinstance(group, dict) or not isinstance(group.get("products"), dict):
        return []
    out = []
    for arch, product in sorted(group["products"].items()):
        if arch == version.architecture or not isinstance(product, str):
            continue
        found = [v for v in session.catalog.versions(product) if v.state not in (State.INACTIVE, State.DELETED)
                 and json.loads(v.build_info or "{}").get(MULTIARCH, {}).get("group") == group.get("group")]
        out.append(Sibling(arch, product, max(found, key=lambda v: v.serial) if found else None))
    return out
