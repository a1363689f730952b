"""The gate, promotion and pruning: one definition of each for every interface."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from imageci.app import access, consumerruns, regressions
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import RefArgs, operation
from imageci.app.session import Session
from imageci.app.versions import Carried, Sibling, gate_of, keep_of, label_of, siblings, suite_of
from imageci.app.waivers import flake_policy
from imageci.checks.base import Check
from imageci.checks.suite import suite_checks
from imageci.errors import Forbidden, GateRefused, UsageError
from imageci.policy.gate import ArchGate, GateResult, evaluate_gate, required_checks
from imageci.store import gatelookups, lookups
from imageci.store.lookups import AttemptInfo
from imageci.store.reading import Reader
from imageci.store.states import State, utcnow

if TYPE_CHECKING:  # a gate is read without the ORM (``store.gatelookups``); a promotion writes through it
    from imageci.app.promotion import PromotionResult

EVIDENCE_RETRIES = 5


class Requirement(BaseModel):
    test: str
    testbed: str
    why: str | None = None  # why it is unmet (None: met), or why an allowed failure is accepted
    change: str | None = None  # on a testing version, against stable: regression, always-failed, fixed, new


class ArchStatus(BaseModel):
    architecture: str
    image: str | None  # NAME-ARCH@SERIAL (None: not built)
    holds: bool
    why: str | None = None


class SectionStatus(BaseModel):
    name: str  # vulnerabilities
    holds: bool
    summary: str
    details: list[str] = []


class GateStatus(BaseModel):
    image: str  # NAME@SERIAL
    digest: str
    state: str
    architecture: str | None = None  # None: from a server before multi-architecture builds
    defined: bool  # False: the image defines no gate
    holds: bool
    met: list[Requirement]
    unmet: list[Requirement]
    accepted: list[Requirement] = []  # met only because the gate allows their change (always-failed)
    architectures: list[ArchStatus] = []  # the other architectures built with it (a definition's `architectures`)
    sections: list[SectionStatus] = []  # the gate's parts besides tests: vulnerabilities
    explanation: str


class Promotion(BaseModel):
    image: str  # NAME@SERIAL, now stable
    digest: str
    forced: bool
    retired: list[str]  # NAME@SERIAL of stable versions beyond `keep`, now inactive
    also: list[str] = []  # NAME-ARCH@SERIAL: the other architectures' versions, promoted with it


def evidence_of(reader: Reader, version: Carried, checks: Sequence[Check],
                recorded: Sequence[AttemptInfo] | None = None) -> list[AttemptInfo]:
    """The attempts recorded on ``version``'s bytes (``recorded``, when already read) for ``checks``, oldest
    first: what its gate judges."""
    ids = {c.id for c in checks}
    return [a for a in (recorded if recorded is not None else lookups.attempts(reader, version.digest))
            if a.test_id in ids]


def _own_gate(session: Session, version: Carried, quarantine: Path | None) -> GateResult | None:
    g = gate_of(version)
    if g is None:
        return None
    suite = suite_of(session, version, warn=False)
    checks = suite_checks(suite)
    waiver = flake_policy(session, version, suite, checks, quarantine, warn=False)
    required = required_checks(checks, g.tests)
    info = access.resolve(session.reader, LOCAL, label_of(version))
    reference = regressions.reference_for(session, info)
    recorded = lookups.attempts(session.reader, version.digest)  # read once: the evidence and its changes
    result = evaluate_gate(evidence_of(session.reader, version, required, recorded), required, g.testbeds, waiver,
                           changes=regressions.changes_against(reference, recorded) if reference else None,
                           allow=g.allow, reference=reference.label if reference else None)
    sections = []
    if (consumed := consumerruns.gate_section(session, version)) is not None:
        sections.append(consumed)
    if g.vulnerabilities is not None or g.compliance is not None or g.reproducible:
        from imageci.app import compliance, repro, vulns  # (what only a gate with those sections reads)

        if g.vulnerabilities is not None:
            sections.append(vulns.gate_section(session, info, g.vulnerabilities, utcnow().date()))
        if g.compliance is not None:
            sections.append(compliance.gate_section(session, info, g.compliance))
        if g.reproducible:
            sections.append(repro.gate_section(session, info))
    return result.with_sections(sections) if sections else result


def _sibling_gate(session: Session, sibling: Sibling, quarantine: Path | None) -> ArchGate:
    if sibling.version is None:
        return ArchGate(sibling.architecture, None, f"no version of {sibling.product} was built with the same "
                                                    f"inputs (imageci build --arch {sibling.architecture})")
    v = sibling.version
    if v.state == State.STABLE:
        return ArchGate(sibling.architecture, label_of(v), None)
    result = _own_gate(session, v, quarantine)
    if result is None:
        return ArchGate(sibling.architecture, label_of(v), "no gate is defined for it")
    why = None if result.holds else f"{len(result.missing)} requirement(s) unmet: " + "; ".join(
        f"{t} on {tb}: {w}" for t, tb, w in result.missing[:3]) + ("; …" if len(result.missing) > 3 else "")
    return ArchGate(sibling.architecture, label_of(v), why)


def gate(session: Session, version: Carried, *, quarantine: Path | None = None) -> GateResult | None:
    """Whether the version's gate holds on the evidence recorded for it (None: it has no gate).
    The required tests are those of the version's stored suite, at their current content. A version
    built for several architectures (one definition, ``architectures``) passes only when the
    version built with it for each other architecture passes its own gate (or is stable)."""
    own = _own_gate(session, version, quarantine)
    if own is None:
        return None
    others = siblings(session, version)
    return own.with_siblings([_sibling_gate(session, s, quarantine) for s in others]) if others else own


def gate_status(session: Session, ref: str, *, viewer: Principal = LOCAL) -> GateStatus:
    """The gate of the version ``ref`` names, evaluated now on its recorded evidence."""
    info = access.resolve(session.reader, viewer, ref)
    version = gatelookups.record(session.reader, info.id)
    result = gate(session, version)
    told = result.changes if result else {}
    return GateStatus(image=label_of(version), digest=f"sha256:{version.digest}", state=version.state,
                      architecture=version.architecture,
                      defined=result is not None, holds=bool(result and result.holds),
                      architectures=[ArchStatus(architecture=s.architecture, image=s.image, holds=s.why is None,
                                                why=s.why) for s in (result.siblings if result else [])],
                      met=[Requirement(test=t, testbed=tb, change=told.get((t, tb))) for t, tb in
                           (result.satisfied if result else [])],
                      unmet=[Requirement(test=t, testbed=tb, why=why, change=told.get((t, tb))) for t, tb, why in
                             (result.missing if result else [])],
                      accepted=[Requirement(test=t, testbed=tb, why=why, change=told.get((t, tb))) for t, tb, why in
                                (result.accepted if result else [])],
                      sections=[SectionStatus(name=s.name, holds=s.holds, summary=s.summary, details=s.lines)
                                for s in (result.sections if result else [])],
                      explanation=result.explain() if result else "no gate is defined for this image")


def promote(session: Session, ref: str, *, to: str = "stable", force: bool = False, reason: str = "",
            quarantine: Path | None = None, by: Principal = LOCAL) -> PromotionResult:
    """testing → stable when the gate holds (or forced, with a reason); audited as ``by`` (the local
    operator: the session's actor), who needs scope ``promote`` in the product's namespace."""
    if to != "stable":
        raise UsageError(f"can only promote to 'stable' (got {to!r})")
    info = access.resolve(session.reader, by, ref)
    by.require(Scope.PROMOTE, info.namespace, f"promote {info.label}")
    from imageci.app.promotion import promote as promote_version
    from imageci.store.catalog import EvidenceChanged

    for _ in range(EVIDENCE_RETRIES):
        version = session.catalog.resolve(f"{info.name}@{info.serial}")
        evidence = session.catalog.evidence(version)  # before the gate reads: a result after it is noticed
        others = [session.catalog.resolve(s.version.label) for s in siblings(session, version)
                  if s.version is not None and s.version.state == State.TESTING]
        for other in others:
            by.require(Scope.PROMOTE, other.product.namespace, f"promote {label_of(other)}")
        also = [(other, session.catalog.evidence(other)) for other in others]
        result = gate(session, version, quarantine=quarantine)
        if not force and result is not None and not result.holds:
            from imageci.app import notify

            notify.promotion_blocked(session.settings, version, result.explain())
        try:
            return promote_version(session.catalog, version, result, keep=keep_of(version), force=force,
                                   reason=reason, actor=None if by == LOCAL else by.name, evidence=evidence,
                                   also=also)
        except EvidenceChanged:
            continue  # a run recorded results meanwhile: judge again on what is there now
    raise GateRefused(f"{info.label}: results kept arriving while its gate was evaluated ({EVIDENCE_RETRIES} "
                      "times); promote it again when the runs on it end")


def promotion_row(result: PromotionResult) -> Promotion:
    return Promotion(image=label_of(result.version), digest=f"sha256:{result.version.digest}",
                     forced=result.forced, retired=[label_of(v) for v in result.retired],
                     also=[label_of(v) for v in result.also])


class Pruned(BaseModel):
    image: str  # NAME@SERIAL
    digest: str
    created: str


def prune(session: Session, *, older_than: timedelta, name: str | None = None, dry_run: bool = False,
          by: Principal = LOCAL) -> list[Pruned]:
    """Retire testing versions older than ``older_than`` that never had a passing run: those of the
    products ``by`` may promote in (scope ``promote``); audited as ``by``."""
    if by.anonymous or by.channel is not None or not (Scope.PROMOTE in by.scopes or Scope.ADMIN in by.scopes):
        raise Forbidden(f"{by.name} may not prune: it needs scope 'promote'")
    from imageci.app.promotion import prune as prune_versions

    done = prune_versions(session.catalog, older_than=older_than, name=name, dry_run=dry_run,
                          actor=None if by == LOCAL else by.name,
                          allowed=lambda v: by.may(Scope.PROMOTE, v.product.namespace))
    return [Pruned(image=label_of(v), digest=f"sha256:{v.digest}", created=v.created_at.isoformat(timespec="seconds"))
            for v in done]



class PromoteRequest(BaseModel):
    to: str = "stable"
    force: bool = False
    reason: str = ""  # required with force; audited


class PromoteArgs(RefArgs):
    body: PromoteRequest


class PruneRequest(BaseModel):
    older_than: str = Field(default="3d", max_length=32, description="an age: 3d, 12h, 90m")
    name: str | None = Field(default=None, max_length=63, description="only this product")
    dry_run: bool = False


class PruneArgs(BaseModel):
    body: PruneRequest


@operation("GET", "/images/{ref}/gate", request=RefArgs, answer=GateStatus, tag="images", name="gate")
def gate_op(session: Session, req: RefArgs, by: Principal) -> GateStatus:
    """The version's gate evaluated now: which requirements are met, which are not and why."""
    return gate_status(session, req.ref, viewer=by)


@operation("POST", "/images/{ref}/promote", request=PromoteArgs, answer=Promotion, tag="images",
           needs_token=True, errors={409: "the gate does not hold"}, name="promote")
def promote_op(session: Session, req: PromoteArgs, by: Principal) -> Promotion:
    """testing → stable when the gate holds (evaluated here, on the server's evidence), or forced
    with a reason; audited as the token's name. Needs scope ``promote`` in the product's namespace."""
    b = req.body
    return promotion_row(promote(session, req.ref, to=b.to, force=b.force, reason=b.reason, by=by))


@operation("POST", "/prune", request=PruneArgs, answer=list[Pruned], tag="images", needs_token=True, name="prune")
def prune_op(session: Session, req: PruneArgs, by: Principal) -> list[Pruned]:
    """Retire ``testing`` versions older than ``older_than`` whose newest run did not pass, in the
    products the caller may promote in; ``dry_run`` only says which."""
    from imageci.definitions.durations import duration_arg

    b = req.body
    return prune(session, older_than=duration_arg(b.older_than), name=b.name, dry_run=b.dry_run, by=by)
