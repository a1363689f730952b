"""Compliance: a version's OpenSCAP evaluation (``imageci compliance``) and the compliance part of
its gate. The evaluation of imageci's built-in Debian 12 content is stored with the version
(``compliance.json``) and reused while that content is unchanged; other content is evaluated on
request and not stored."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from imageci.app import access, inventory
from imageci.app.access import LOCAL, Principal
from imageci.app.operations import RefArgs, operation
from imageci.app.session import Session
from imageci.definitions.image import ComplianceGate
from imageci.errors import ImageciError
from imageci.policy.compliancegate import evaluate_compliance
from imageci.policy.sections import GateSection
from imageci.store.catalog import NewArtifact
from imageci.store.lookups import VersionInfo
from imageci.store.states import COMPLIANCE
from imageci.supply.compliance import BUILTIN, BUILTIN_PROFILE, ComplianceResult, content_sha256, evaluate

FILENAME = "compliance.json"


class ComplianceReport(ComplianceResult):
    image: str  # NAME@SERIAL
    digest: str
    content: str  # the content file's name ("built-in": imageci's Debian 12 baseline)


def _builtin(session: Session, version: VersionInfo, profile: str) -> ComplianceResult:
    """The stored evaluation of the built-in content with ``profile``, made now if there is none for
    the content as it is."""
    stored = inventory.digests(session, version).get(COMPLIANCE)
    digest = content_sha256(BUILTIN)
    if stored is not None:
        found = ComplianceResult.model_validate(json.loads(session.store.read_bytes(stored)))
        if found.content_sha256 == digest and found.profile == profile:
            return found
    result = evaluate(inventory.tree(session, version, "evaluate"), BUILTIN, profile)
    blob = session.store.put_bytes(result.model_dump_json().encode())
    session.catalog.attach(version.id, [NewArtifact(COMPLIANCE, FILENAME, blob.digest, blob.size)])
    return result


def report(session: Session, ref: str, *, content: Path | None = None, profile: str | None = None,
           viewer: Principal = LOCAL) -> ComplianceReport:
    """The version's compliance with ``content`` (default: imageci's Debian 12 baseline) and
    ``profile``; the built-in content's evaluation is stored with the version."""
    version = access.resolve(session.reader, viewer, ref)
    if content is None:
        result = _builtin(session, version, profile or BUILTIN_PROFILE)
    else:
        result = evaluate(inventory.tree(session, version, "evaluate"), content, profile)
    return ComplianceReport(image=version.label, digest=f"sha256:{version.digest}",
                            content="built-in" if content is None else content.name, **result.model_dump())


def gate_section(session: Session, version: VersionInfo, policy: ComplianceGate) -> GateSection:
    try:
        result = _builtin(session, version, policy.profile)
    except ImageciError as exc:
        return GateSection("compliance", False, f"not evaluated: {exc}")
    return evaluate_compliance(policy, result)


class ComplianceArgs(RefArgs):
    profile: str | None = Field(default=None, max_length=255, pattern=r"^[A-Za-z0-9_.:-]+$",
                                description="another profile of the built-in content")


@operation("GET", "/images/{ref}/compliance", request=ComplianceArgs, answer=ComplianceReport, tag="images",
           name="compliance")
def compliance_op(session: Session, req: ComplianceArgs, by: Principal) -> ComplianceReport:
    """The version's OpenSCAP evaluation with imageci's Debian 12 baseline (``profile``: another of
    its profiles): score and per-rule results, stored with the version."""
    return report(session, req.ref, profile=req.profile, viewer=by)
