"""The vulnerability part of a gate: which of a version's known vulnerabilities block promotion.

A finding blocks when its severity is one the gate lists in ``block``, a fix is available (unless
``only_fixed: false``) and no allowance in force names it (by its id or an alias). An allowance is
in force through its ``expires`` day; after that it is reported as expired and no longer waives.
A gate that asks about vulnerabilities does not hold when no feed was ever imported: no data is no
evidence that the image is clean."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from imageci.definitions.image import VulnGate
from imageci.policy.sections import GateSection
from imageci.supply.vulnmatch import Finding


def evaluate_vulns(policy: VulnGate, findings: Sequence[Finding], feeds: Sequence[str], today: date) -> GateSection:
    if not feeds:
        return GateSection("vulnerabilities", False, "no vulnerability data: import a feed first "
                                                     "(imageci vulndb import FILE)")
    allowed = {a.id: a for a in policy.allow}
    blocking, waived = [], []
    for f in findings:
        if f.severity not in policy.block or (policy.only_fixed and not f.fix_available):
            continue
        allowance = next((allowed[i] for i in (f.id, *f.aliases) if i in allowed), None)
        fix = f"fixed in {f.fixed}" if f.fixed else "no fix yet"
        what = f"{f.id} ({f.severity}) in {f.package} {f.installed}: {fix}"
        if allowance is not None and allowance.expires >= today:
            waived.append(f"{what}; allowed until {allowance.expires}: {allowance.reason}")
        elif allowance is not None:
            blocking.append(f"{what}; its allowance expired on {allowance.expires}")
        else:
            blocking.append(what)
    rule = f"{'/'.join(policy.block)}{' with a fix available' if policy.only_fixed else ''}"
    if blocking:
        summary = f"{len(blocking)} known vulnerabilit{'y' if len(blocking) == 1 else 'ies'} block ({rule})"
    else:
        summary = f"no blocking vulnerability ({rule}; {len(findings)} known, {len(waived)} allowed)"
    return GateSection("vulnerabilities", not blocking, summary,
                       [f"blocks: {b}" for b in blocking] + [f"allowed: {w}" for w in waived])
