"""A bill of materials as an SPDX 2.3 JSON document, written and validated by spdx-tools.

The image is the described package (primary purpose CONTAINER, its sha256); every installed
package is CONTAINED_BY it, with its purl as a PACKAGE-MANAGER external reference, its source
package in ``sourceInfo`` and its declared licenses as ``licenseDeclared`` (Debian short names
become SPDX identifiers where one exists, a ``LicenseRef-`` with an extracted-licensing entry
otherwise)."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from spdx_tools.spdx.model.actor import Actor, ActorType
from spdx_tools.spdx.model.checksum import Checksum, ChecksumAlgorithm
from spdx_tools.spdx.model.document import CreationInfo, Document
from spdx_tools.spdx.model.extracted_licensing_info import ExtractedLicensingInfo
from spdx_tools.spdx.model.package import ExternalPackageRef, ExternalPackageRefCategory, Package, PackagePurpose
from spdx_tools.spdx.model.relationship import Relationship, RelationshipType
from spdx_tools.spdx.model.spdx_no_assertion import SpdxNoAssertion
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

from imageci import __version__
from imageci.supply import packages as bom_model
from imageci.supply.licenses import expression, spdx_id
from imageci.supply.subject import TOOL, Subject

NOT_ID = re.compile(r"[^A-Za-z0-9.-]+")


class InvalidSbom(Exception):
    """An SBOM the format's own validator refuses (a bug here, never the user's input)."""


def license_ref(name: str) -> str:
    return "LicenseRef-" + (NOT_ID.sub("-", name).strip("-") or "unnamed")


def _declared(names: list[str], refs: dict[str, str]) -> Any:
    if not names:
        return SpdxNoAssertion()
    parts = []
    for name in names:
        known = spdx_id(name)
        if known is None:
            known = license_ref(name)
            refs.setdefault(known, name)
        if known not in parts:
            parts.append(known)
    return expression(" AND ".join(parts))


def _element_id(package: bom_model.Package, used: set[str]) -> str:
    base = "SPDXRef-Package-" + NOT_ID.sub("-", f"{package.type}-{package.name}-{package.arch}").strip("-")
    candidate, n = base, 1
    while candidate in used:
        n += 1
        candidate = f"{base}-{n}"
    used.add(candidate)
    return candidate


def spdx_document(bom: bom_model.Bom, subject: Subject) -> Document:
    creation = CreationInfo(spdx_version="SPDX-2.3", spdx_id="SPDXRef-DOCUMENT", name=subject.label,
                            document_namespace=f"urn:uuid:{subject.document_uuid('spdx')}",
                            creators=[Actor(ActorType.TOOL, f"{TOOL}-{__version__}")], created=subject.created)
    image = Package(spdx_id="SPDXRef-Image", name=subject.name, version=subject.serial,
                    download_location=SpdxNoAssertion(), files_analyzed=False,
                    checksums=[Checksum(ChecksumAlgorithm.SHA256, subject.digest)],
                    primary_package_purpose=PackagePurpose.CONTAINER,
                    comment=f"architecture {subject.architecture}"
                            + (f"; {bom.distro.pretty_name or bom.distro.qualifier()}" if bom.distro else ""))
    refs: dict[str, str] = {}
    used = {"SPDXRef-Image"}
    members = []
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, "SPDXRef-Image")]
    for p in bom.packages:
        element = _element_id(p, used)
        members.append(Package(
            spdx_id=element, name=p.name, version=p.version, download_location=SpdxNoAssertion(),
            files_analyzed=False, supplier=SpdxNoAssertion(), license_concluded=SpdxNoAssertion(),
            license_declared=_declared(p.licenses, refs), copyright_text=SpdxNoAssertion(),
            source_info=f"built from source package {p.source} {p.source_version}" if p.source else None,
            external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", p.purl)],
            primary_package_purpose=PackagePurpose.LIBRARY))
        relationships.append(Relationship(element, RelationshipType.CONTAINED_BY, "SPDXRef-Image"))
    extracted = [ExtractedLicensingInfo(license_id=ref, extracted_text=f"{name} (as declared by the package; "
                                                                         "its text is in the package's copyright file)",
                                        license_name=name) for ref, name in sorted(refs.items())]
    return Document(creation, packages=[image, *members], relationships=relationships,
                    extracted_licensing_info=extracted)


def spdx_json(bom: bom_model.Bom, subject: Subject) -> dict[str, Any]:
    """The SPDX 2.3 JSON document, validated by spdx-tools before it is returned."""
    document = spdx_document(bom, subject)
    problems = validate_full_spdx_document(document)
    if problems:
        raise InvalidSbom("; ".join(p.validation_message for p in problems[:5]))
    out = io.StringIO()
    write_document_to_stream(document, out, validate=False)
    parsed: dict[str, Any] = json.loads(out.getvalue())
    return parsed
