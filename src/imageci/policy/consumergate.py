"""When a consumer's suite blocks a promotion: a gating consumer that fails on the new version and
passed on the current stable one (a regression). One that fails on stable too is reported, not
blocking (the new version did not break it); with no stable version there is nothing it can regress
from. A gating consumer with no verdict on the new version blocks (it never ran on these bytes), and
so does one that failed when stable's verdict is unknown (a regression cannot be ruled out: run it
on stable). A consumer that is not gating never blocks; its regressions are reported the same way.
Whether it is a regression is ``policy.reference``'s rule, the one every test is told by."""

from __future__ import annotations

from dataclasses import dataclass, field

from imageci.policy.reference import Change, Status, classify


@dataclass(frozen=True)
class Side:
    """How a consumer did on one version: passed on every testbed, failed on one, or not known."""

    image: str  # NAME@SERIAL
    status: Status
    testbed: str = ""  # where it failed, or where it has no verdict
    reason: str = ""
    log_digest: str | None = None

    def describe(self) -> str:
        if self.status == "passed":
            return f"passed on {self.image}"
        if self.status == "failed":
            return f"failed on {self.image} ({self.testbed}: {self.reason})" if self.reason else \
                f"failed on {self.image} ({self.testbed})"
        return f"never ran on {self.image} ({self.testbed}) with its newest snapshot"


@dataclass
class ConsumerVerdict:
    name: str
    gating: bool
    new: Side
    old: Side | None  # the current stable version (None: there is none)
    blocks: bool
    regression: bool
    why: str
    culprits: list[str] = field(default_factory=list)
    change: Change | None = None  # against stable (policy.reference)

    def line(self) -> str:
        kind = "gating" if self.gating else "not gating"
        return f"consumer {self.name} ({kind}): {self.why}"


def judge(name: str, gating: bool, new: Side, old: Side | None) -> ConsumerVerdict:
    """The consumers rule, for one consumer: its verdict on the new version against stable's."""
    change = classify(new.status, old.status if old is not None else None)
    if new.status == "passed":
        why, blocks = new.describe(), False
    elif new.status == "unknown":
        why, blocks = new.describe(), gating
    elif old is None:
        why, blocks = f"{new.describe()}; no stable version to compare with: reported, not blocking", False
    elif change is Change.REGRESSION:
        why, blocks = f"{new.describe()}, and {old.describe()}: broken by this version", gating
    elif change is Change.ALWAYS_FAILED:
        why, blocks = f"{new.describe()}; it {old.describe()} too: reported, not blocking", False
    else:
        why = (f"{new.describe()}; it {old.describe()}, so a regression cannot be ruled out "
               f"(imageci run {old.image} consumer:{name})")
        blocks = gating
    return ConsumerVerdict(name, gating, new, old, blocks and gating, change is Change.REGRESSION, why,
                           change=change)
