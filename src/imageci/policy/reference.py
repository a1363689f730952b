"""A verdict told against a reference: the same test (same content digest) on the same testbed and
architecture, on the product's current ``stable`` version. One rule for every test, the consumers'
suites included:

================  ==============  =================
here              reference       change
================  ==============  =================
fails             passed          ``regression``
fails             failed          ``always-failed``
passes            failed          ``fixed``
fails or passes   none            ``new``
passes            passed          (none: nothing changed)
================  ==============  =================

"none" is no stable version, or no verdict there for this test content (a new test, a first
version, or never run there). An ``error`` or a skip says nothing about the image, here or there:
it is not classified, and a reference with only those counts as none. A reference that passed
once (a flaky pass included) passed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Literal

from imageci.verdicts import Verdict

Status = Literal["passed", "failed", "unknown"]


class Change(enum.StrEnum):
    REGRESSION = "regression"
    ALWAYS_FAILED = "always-failed"
    FIXED = "fixed"
    NEW = "new"


ALLOWABLE = (Change.ALWAYS_FAILED,)  # what a gate may accept (`gate: {allow: [always-failed]}`)
MARKS = {Change.REGRESSION: "▼", Change.ALWAYS_FAILED: "≡", Change.FIXED: "▲", Change.NEW: "✱"}


def marked(change: str | None) -> str:
    """A change as tables show it: its mark and its word ("-": none)."""
    return f"{MARKS[Change(change)]} {change}" if change else "-"


def status_of(verdicts: Iterable[str]) -> Status:
    """What a test's attempts on one version say: passed (one passed), failed (one failed, none
    passed) or unknown (errors and skips only, or none)."""
    seen = set(verdicts)
    if Verdict.PASS in seen or Verdict.FLAKY in seen:
        return "passed"
    return "failed" if Verdict.FAIL in seen else "unknown"


def classify(here: Status, reference: Status | None) -> Change | None:
    """The change a verdict here is against the reference's (None: no reference version at all)."""
    if here == "unknown":
        return None
    if reference is None or reference == "unknown":
        return Change.NEW
    if here == "failed":
        return Change.REGRESSION if reference == "passed" else Change.ALWAYS_FAILED
    return Change.FIXED if reference == "failed" else None


def describe(change: Change | None, reference: str | None) -> str:
    """One line on what a change means, naming the reference version (NAME@SERIAL)."""
    where = reference or "the stable version"
    return {Change.REGRESSION: f"passed on {where}: broken by this version",
            Change.ALWAYS_FAILED: f"failed on {where} too",
            Change.FIXED: f"failed on {where}: fixed by this version",
            Change.NEW: f"no verdict on {where} for this test" if reference else "no stable version to compare with",
            None: ""}[change]
