"""The compliance part of a gate: the version's OpenSCAP score against the gate's minimum."""

from __future__ import annotations

from imageci.definitions.image import ComplianceGate
from imageci.policy.sections import GateSection
from imageci.supply.compliance import ComplianceResult


def evaluate_compliance(policy: ComplianceGate, result: ComplianceResult) -> GateSection:
    if result.applicable == 0:
        return GateSection("compliance", False, f"no rule of {result.profile} applies to this image: a score "
                                                "of nothing is no evidence")
    score = 100.0 * result.score / result.maximum if result.maximum else 0.0
    failed = [f"fails: {r.title} ({r.severity}; {r.id})" for r in result.failed]
    holds = score >= policy.min_score
    summary = (f"score {score:.1f} {'≥' if holds else '<'} {policy.min_score:g} ({result.applicable} rule(s) "
               f"applied, {len(result.failed)} failed)")
    return GateSection("compliance", holds, summary, failed)
