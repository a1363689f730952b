"""A bill of materials as a CycloneDX 1.6 JSON document, written and validated by
cyclonedx-python-lib: the image is the metadata component (type container), the distribution an
operating-system component, every installed package a library component with its purl, its
declared licenses (an SPDX id where there is one, the declared name otherwise) and its source
package as properties."""

from __future__ import annotations

import json
from typing import Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom as CdxBom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense
from cyclonedx.model.tool import Tool
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from imageci import __version__
from imageci.supply import packages as bom_model
from imageci.supply.licenses import spdx_id
from imageci.supply.spdx import InvalidSbom
from imageci.supply.subject import TOOL, Subject


def _licenses(names: list[str]) -> list[DisjunctiveLicense]:
    out, seen = [], set()
    for name in names:
        known = spdx_id(name)
        key = known or name
        if key in seen:
            continue
        seen.add(key)
        out.append(DisjunctiveLicense(id=known) if known else DisjunctiveLicense(name=name))
    return out


def cyclonedx_json(bom: bom_model.Bom, subject: Subject) -> dict[str, Any]:
    """The CycloneDX 1.6 JSON document, validated against the 1.6 schema before it is returned."""
    doc = CdxBom(serial_number=subject.document_uuid("cyclonedx"))
    doc.metadata.timestamp = subject.created
    doc.metadata.tools.tools.add(Tool(name=TOOL, version=__version__))
    image = doc.metadata.component = Component(
        name=subject.name, version=subject.serial, type=ComponentType.CONTAINER, bom_ref="image",
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=subject.digest)],
        properties=[Property(name="imageci:architecture", value=subject.architecture)])
    if bom.distro is not None:
        doc.components.add(Component(name=bom.distro.id, version=bom.distro.version_id or None,
                                     type=ComponentType.OPERATING_SYSTEM, bom_ref=f"os:{bom.distro.qualifier()}",
                                     description=bom.distro.pretty_name or None))
    members: list[Component] = list(doc.components)
    seen: set[str] = set()
    for p in bom.packages:
        if p.purl in seen:
            continue
        seen.add(p.purl)
        props = [Property(name="imageci:package-manager", value=p.type)]
        if p.source:
            props.append(Property(name="imageci:source-package", value=f"{p.source} {p.source_version}"))
        member = Component(name=p.name, version=p.version, type=ComponentType.LIBRARY, bom_ref=p.purl,
                           purl=PackageURL.from_string(p.purl), licenses=_licenses(p.licenses), properties=props)
        doc.components.add(member)
        members.append(member)
    doc.register_dependency(image, members)  # the image holds every package (their own graph is not read)
    text = JsonV1Dot6(doc).output_as_string(indent=None)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise InvalidSbom(f"CycloneDX 1.6 schema: {error}")
    parsed: dict[str, Any] = json.loads(text)
    return parsed
