"""The result vocabulary shared by checks, the engine, policy and reports.

``pass``   the test ran and succeeded
``fail``   the test ran and found the image wrong
``error``  the testbed or the harness broke: says nothing about the image
``skip``   not run or not applicable, always with a reason
``flaky``  failed, then passed on a retry (or a known-flaky test failed):
           counts as passing for the gate, and is reported

Aggregation: worst wins, error > fail > flaky > pass > skip.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"
    FLAKY = "flaky"


SEVERITY = {Verdict.SKIP: 0, Verdict.PASS: 1, Verdict.FLAKY: 2, Verdict.FAIL: 3, Verdict.ERROR: 4}

SKIP_EXIT_CODE = 77


def worst(verdicts: Iterable[Verdict]) -> Verdict | None:
    vs = list(verdicts)
    return max(vs, key=SEVERITY.__getitem__) if vs else None
