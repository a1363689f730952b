"""Each verdict on a ``testing`` version told against the product's current stable version
(``policy.reference``): the reference's verdicts, read once per version, and the reference runs —
a failing test with no verdict on stable runs there once, so that a regression can be told from a
test that fails anyway."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import BaseModel

from imageci.app import access
from imageci.app.access import Principal
from imageci.app.operations import RefArgs, operation
from imageci.app.session import Session
from imageci.policy.reference import MARKS as MARKS  # re-exported: the interfaces show them
from imageci.policy.reference import Change as Change
from imageci.policy.reference import Status, classify, describe, status_of
from imageci.policy.reference import marked as marked
from imageci.store import lookups
from imageci.store.lookups import AttemptInfo, VersionInfo
from imageci.store.states import State

Key = tuple[str, str, str]  # (test id, testbed, test content digest)
REFERENCE_OPTION = "reference_for"  # a reference run's record says for which version (NAME@SERIAL) it ran


@dataclass(frozen=True)
class Reference:
    """The stable version a testing version's verdicts are told against, and its verdicts there."""

    version: VersionInfo | None  # None: the product has no stable version
    statuses: dict[Key, Status] = field(default_factory=dict)

    @property
    def label(self) -> str | None:
        return self.version.label if self.version is not None else None

    def status(self, key: Key) -> Status | None:
        """The reference's verdict on one test ("unknown": never ran there; None: no stable version)."""
        return None if self.version is None else self.statuses.get(key, "unknown")

    def change(self, key: Key, verdicts: Iterable[str]) -> Change | None:
        """The change the verdict(s) here make against the reference's."""
        return classify(status_of(verdicts), self.status(key))

    def why(self, change: Change | None) -> str:
        return describe(change, self.label)


def reference_for(session: Session, version: VersionInfo) -> Reference | None:
    """The reference of ``version``'s verdicts (None: it is not on testing, so nothing is told against
    stable)."""
    if version.state != State.TESTING:
        return None
    stable = lookups.stable_for(session.reader, version.id)
    if stable is None:
        return Reference(None)
    verdicts: dict[Key, list[str]] = {}
    for a in lookups.attempts(session.reader, stable.digest):
        verdicts.setdefault((a.test_id, a.testbed, a.test_digest), []).append(a.verdict)
    return Reference(stable, {k: status_of(v) for k, v in verdicts.items()})


def changes(session: Session, version: VersionInfo) -> dict[Key, Change | None]:
    """Each test's change on ``version`` (all its attempts there together) against the reference."""
    ref = reference_for(session, version)
    return changes_against(ref, lookups.attempts(session.reader, version.digest)) if ref is not None else {}


def changes_against(ref: Reference, attempts: Iterable[AttemptInfo]) -> dict[Key, Change | None]:
    """Each test's change in ``attempts`` (a version's, all of them) against ``ref``."""
    verdicts: dict[Key, list[str]] = {}
    for a in attempts:
        verdicts.setdefault((a.test_id, a.testbed, a.test_digest), []).append(a.verdict)
    return {k: ref.change(k, v) for k, v in verdicts.items()}


def references_needed(session: Session, version: VersionInfo,
                      keys: Iterable[Key]) -> tuple[VersionInfo, list[Key]] | None:
    """The stable version and the tests (of ``keys``) that failed on ``version`` and never ran there with
    this content: what a reference run runs. None when there is nothing to run."""
    ref = reference_for(session, version)
    if ref is None or ref.version is None:
        return None
    wanted = set(keys)
    here: dict[Key, list[str]] = {}
    for a in lookups.attempts(session.reader, version.digest):
        key = (a.test_id, a.testbed, a.test_digest)
        if key in wanted:
            here.setdefault(key, []).append(a.verdict)
    missing = [k for k, v in here.items() if status_of(v) == "failed" and k not in ref.statuses]
    return (ref.version, sorted(missing)) if missing else None


class TestKey(BaseModel):
    test: str
    testbed: str
    test_digest: str


class TestChange(TestKey):
    change: str  # regression | always-failed | fixed | new
    why: str


class ReferenceState(BaseModel):
    reference: str | None  # the stable version (NAME@SERIAL) the verdicts are told against; None: none is
    needed: list[TestKey]  # failing here, never run there with this content: what a reference run runs
    changes: list[TestChange]  # each test's change, as it stands now


@operation("GET", "/images/{ref}/references", request=RefArgs, answer=ReferenceState, tag="images",
           name="references")
def references_op(session: Session, req: RefArgs, by: Principal) -> ReferenceState:
    """The stable version a testing version's verdicts are told against, each test's change against it, and
    the failing tests it has no verdict of (a client that tested the version runs those there, recorded as
    a reference run, so that a regression can be told from an old failure)."""
    version = access.resolve(session.reader, by, req.ref)
    ref = reference_for(session, version)
    if ref is None or ref.version is None:
        return ReferenceState(reference=None, needed=[], changes=[])
    keys = {(a.test_id, a.testbed, a.test_digest) for a in lookups.attempts(session.reader, version.digest)}
    needed = references_needed(session, version, keys)
    told = changes(session, version)
    return ReferenceState(
        reference=ref.label, needed=[TestKey(test=t, testbed=b, test_digest=d) for t, b, d in
                                     (needed[1] if needed else [])],
        changes=[TestChange(test=t, testbed=b, test_digest=d, change=c.value, why=ref.why(c))
                 for (t, b, d), c in sorted(told.items()) if c is not None])
