"""`imageci bisect REF TEST`: the smallest set of changes between the last good version and REF that
makes TEST fail. Both ends are re-run first (``repeat`` times each); the bad end's failure signature is
pinned; good + every change (synthesized, ``build.intermediate``) must fail the same way; then delta
debugging over the changes (``policy.bisection``: one source package's binaries together first, then
each alone); then confirmation (good + culprit fails, bad − culprit passes, ``repeat`` times each). The
result is kept in the catalog with the version and the test."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from imageci.app import inventory
from imageci.app.bisectruns import TREE_TESTBEDS, Ends, Ran, StepRunner
from imageci.app.operations import RefArgs
from imageci.app.session import Session
from imageci.app.versions import suite_of
from imageci.build.intermediate import Move
from imageci.checks.base import Check
from imageci.checks.suite import suite_checks
from imageci.errors import UsageError
from imageci.policy.bisection import Answer, Search, answer
from imageci.store import lookups
from imageci.store.models import Version, label, utcnow
from imageci.store.states import DISK
from imageci.supply.changelog import entries_between


class BisectRequest(BaseModel):
    """What to bisect, as a command's options or an API request's body."""

    test: str = Field(min_length=1, max_length=255, description="the test (its id in the version's suite)")
    good: str | None = Field(default=None, max_length=255, description="the good end (default: the newest older "
                                                                        "version it passed on)")
    repeat: int = Field(default=3, ge=1, le=20, description="runs of each end, and of each confirmation")
    testbed: str | None = Field(default=None, max_length=64, description="where to run it: sandbox or qemu "
                                                                         "(default: where it last ran on REF)")
    jobs: int = Field(default=1, ge=1, le=64, description="steps run at once")
    budget: int | None = Field(default=None, ge=1, le=100000, description="stop after this many test runs")


class BisectArgs(RefArgs, BisectRequest):
    executor: Literal["local", "celery"] | None = Field(
        default=None, description="where the steps run: here, or as jobs on Celery workers (default: "
                                  "IMAGECI_EXECUTOR)")


class BisectStep(BaseModel):
    what: str  # good end | bad end | every change | search | confirm: good + culprit | confirm: bad − culprit
    changes: list[str] = []  # the changes taken from the bad end (keys), for an intermediate image
    verdicts: list[str]
    answer: str = ""  # an intermediate's: fail (the pinned failure), pass, unresolved
    runs: list[int]
    signature: str = ""  # the first failure's


class Culprit(BaseModel):
    key: str  # deb:NAME:ARCH, or files
    change: str  # "libfoo 1.0-1 → 1.1-1"
    package: str = ""
    before: str | None = None
    after: str | None = None
    source: str = ""
    paths: list[str] = []  # for files changed outside package management
    changelog: list[str] = []  # the entries between the two versions, newest first


class BisectResult(BaseModel):
    id: int | None = None
    image: str  # the bad end, NAME@SERIAL
    test: str
    testbed: str
    good: str | None  # NAME@SERIAL
    finding: str  # running, then: culprit | unconfirmed | unreliable-ends | not-reproduced | no-changes |
    #               budget-spent | error | interrupted | aborted (its process died)
    explanation: str
    signature: str = ""  # the bad end's pinned failure
    candidates: int = 0  # changes between the ends
    culprits: list[Culprit] = []
    confirmed: bool | None = None
    steps: list[BisectStep] = []
    test_runs: int = 0
    seconds: float = 0.0
    started: datetime | None = None
    ended: datetime | None = None  # None while running


class BudgetSpent(Exception):
    pass


def _check(session: Session, version: Version, test: str) -> Check:
    checks = suite_checks(suite_of(session, version, warn=False))
    found = next((c for c in checks if c.id == test), None)
    if found is None:
        raise UsageError(f"{label(version)}'s suite has no test {test!r}; its tests: "
                         f"{', '.join(sorted(c.id for c in checks)) or 'none'}")
    return found


def _testbed(session: Session, version: Version, test: str, given: str | None) -> str:
    seen = [a.testbed for a in lookups.attempts(session.reader, version.digest) if a.test_id == test]
    chosen = given or (seen[-1] if seen else "sandbox")
    if chosen not in TREE_TESTBEDS:
        raise UsageError(f"bisect runs intermediate images on {' or '.join(TREE_TESTBEDS)} (they exist as "
                         f"unpacked trees only), not on {chosen}: name one with --testbed")
    return chosen


def _good_end(session: Session, bad: Version, test: str, testbed: str) -> Version:
    older = sorted((v for v in session.catalog.versions(bad.product.name) if v.serial < bad.serial
                    and v.state != "deleted"), key=lambda v: v.serial, reverse=True)
    for v in older:
        if any(a.test_id == test and a.testbed == testbed and a.verdict == "pass"
               for a in lookups.attempts(session.reader, v.digest)):
            return v
    raise UsageError(f"no older version of {bad.product.name} passed {test} on {testbed}: name the good end "
                     "with --good")


def _moves(session: Session, good: Version, bad: Version) -> list[Move]:
    a, b = (lookups.resolve(session.reader, label(v)) for v in (good, bad))
    diff = inventory.version_diff(session, a, b)
    others = sorted({p.type for p in diff.packages if p.type not in ("deb", "apk", "rpm")})
    if others:
        raise UsageError(f"bisect makes intermediate images from dpkg's, apk's and rpm's databases; {label(bad)} "
                         f"changes {', '.join(others)} packages")
    sources = {(p.name, p.arch): p.source or p.name for v in (a, b) for p in inventory.bom_of(session, v).packages}
    moves = [Move(key=f"{p.type}:{p.name}:{p.arch}", name=p.name, arch=p.arch, before=p.before, after=p.after,
                  source=sources.get((p.name, p.arch), p.name)) for p in diff.packages]
    if diff.files:
        moves.append(Move(key="files", paths=tuple(f.path for f in diff.files)))
    return moves


@dataclass(frozen=True)
class Target:
    """A bisection's request, checked: the two ends, the test and the testbed."""

    args: BisectArgs
    bad: Version
    good: Version
    check: Check
    testbed: str


class Bisection:
    """One bisection's state: its runner, its steps, its budget."""

    def __init__(self, session: Session, target: Target) -> None:
        args, good, bad = target.args, target.good, target.bad
        good_info, bad_info = (lookups.resolve(session.reader, label(v)) for v in (good, bad))
        ends = Ends(good, bad, inventory.tree(session, good_info, "bisect").name,
                    inventory.tree(session, bad_info, "bisect").name)
        self.args, self.check, self.testbed, self.ends = args, target.check, target.testbed, ends
        self.runner = StepRunner(session, target.check, target.testbed, ends, args.jobs,
                                 {"bisect": f"{target.check.id}: {label(good)} .. {label(bad)}"},
                                 executor=args.executor or session.settings.executor)
        self.steps: list[BisectStep] = []
        self.pinned = ""

    def _spend(self, runs: int) -> None:
        if self.args.budget is not None and self.runner.runs + runs > self.args.budget:
            raise BudgetSpent(f"the budget of {self.args.budget} test runs is spent ({self.runner.runs} ran)")

    def _step(self, what: str, ran: Sequence[Ran], changes: Sequence[Move] | None = None) -> Answer | None:
        """Record a step; an intermediate's answer (``changes`` given), else None."""
        told = _worst([answer(r.verdict, r.signature, self.pinned) for r in ran]) if changes is not None else None
        self.steps.append(BisectStep(what=what, changes=[m.key for m in changes or ()],
                                     verdicts=[r.verdict for r in ran], answer=told or "",
                                     runs=[r.run for r in ran],
                                     signature=next((r.signature for r in ran if r.verdict != "pass"), "")))
        return told

    def version(self, v: Version, what: str) -> list[Ran]:
        self._spend(self.args.repeat)
        ran = self.runner.version(v, self.args.repeat, what)
        self._step(what, ran)
        return ran

    def intermediates(self, sets: Sequence[Sequence[Move]], what: str, times: int = 1) -> list[Answer]:
        """What each of the intermediates ``sets`` (good + those changes) says, run ``times`` times each."""
        self._spend(len(sets) * times)
        if times == 1:
            ran = [[r] for r in self.runner.intermediates(sets, what)]
        else:
            ran = [self.runner.intermediate(moves, times, what) for moves in sets]
        out: list[Answer] = []
        for moves, runs in zip(sets, ran, strict=True):
            told = self._step(what, runs, moves)
            assert told is not None
            out.append(told)
        return out


def _worst(answers: Sequence[Answer]) -> Answer:
    """Several runs of one image: the pinned failure every time, a pass every time, or neither."""
    if answers and all(a == "fail" for a in answers):
        return "fail"
    return "pass" if answers and all(a == "pass" for a in answers) else "unresolved"


def _search(b: Bisection, moves: list[Move]) -> list[Move]:
    """The culprit changes: source groups first, then their binary packages one by one."""
    by_key = {m.key: m for m in moves}
    groups: dict[str, list[str]] = {}
    for m in moves:
        groups.setdefault(f"src:{m.source}" if m.key != "files" else "files", []).append(m.key)

    def over_groups(sets: list[tuple[str, ...]]) -> list[Answer]:
        return b.intermediates([[by_key[k] for g in s for k in groups[g]] for s in sets], "search")

    def over_moves(sets: list[tuple[str, ...]]) -> list[Answer]:
        return b.intermediates([[by_key[k] for k in s] for s in sets], "search")

    found = Search(over_groups).minimize(sorted(groups))
    keys = [k for g in found for k in groups[g]]
    if len(keys) > 1:
        keys = Search(over_moves).minimize(keys)
    return [by_key[k] for k in keys]


def _confirm(b: Bisection, moves: list[Move], culprits: list[Move]) -> bool:
    rest = [m for m in moves if m not in culprits]
    plus = b.intermediates([culprits], "confirm: good + culprit", b.args.repeat)[0]
    minus = b.intermediates([rest], "confirm: bad − culprit", b.args.repeat)[0] if rest else "pass"
    return plus == "fail" and minus == "pass"


def _culprit(tree_of_bad: str, session: Session, m: Move) -> Culprit:
    if m.key == "files":
        return Culprit(key=m.key, change=m.describe(), paths=list(m.paths))
    tree = session.settings.rootfs_cache / tree_of_bad
    return Culprit(key=m.key, change=m.describe(), package=m.name, before=m.before, after=m.after, source=m.source,
                   changelog=entries_between(tree, m.name, m.before, m.after) if m.after else [])


def _ends(b: Bisection) -> str | None:
    """Re-run both ends; why bisection cannot go on (None: good passed and bad failed every time)."""
    good, bad = b.ends.good, b.ends.bad
    good_runs = b.version(good, "good end")
    bad_runs = b.version(bad, "bad end")
    b.pinned = next((r.signature for r in bad_runs if r.verdict != "pass"), "")
    n = b.args.repeat
    if any(r.verdict != "pass" for r in good_runs):
        said = ", ".join(r.verdict for r in good_runs)
        return f"the good end {label(good)} did not pass every time ({said} in {n} runs): the test is flaky or " \
               "depends on more than the image; bisecting it would guess"
    if any(r.verdict != "fail" for r in bad_runs):
        said = ", ".join(r.verdict for r in bad_runs)
        return f"the bad end {label(bad)} did not fail every time ({said} in {n} runs): the failure is flaky " \
               "(see `imageci flaky`); bisecting it would guess"
    return None


def _outcome(b: Bisection, session: Session, moves: list[Move]) -> tuple[str, str, list[Culprit], bool | None]:
    """(finding, explanation, culprits, confirmed) once the ends reproduce."""
    if not moves:
        return "no-changes", "no package and no file changed between the ends (only what dpkg's maintainer " \
                             "scripts or the image's metadata hold differs)", [], None
    if b.intermediates([moves], "every change")[0] != "fail":
        last = b.steps[-1]
        return "not-reproduced", (
            f"the good image with every change taken from the bad one ({last.verdicts[0]}"
            f"{': ' + last.signature if last.signature else ''}) does not fail as the bad end does "
            f"({b.pinned}): maintainer scripts, which are not replayed, or something else the trees do not hold "
            "matters, so no set of changes can be named"), [], None
    culprits = _search(b, moves)
    confirmed = _confirm(b, moves, culprits)
    named = [_culprit(b.ends.bad_tree, session, m) for m in culprits]
    what = "; ".join(c.change for c in named)
    if confirmed:
        return "culprit", f"{what}: the good image with it fails as the bad end does, the bad image without it " \
                          f"passes ({b.args.repeat} runs each)", named, True
    return "unconfirmed", f"{what} was found, but did not confirm: the good image with it did not fail every " \
                          "time, or the bad image without it did not pass every time", named, False


def target(session: Session, args: BisectArgs) -> Target:
    """The request checked (quickly: nothing is unpacked or run): a refusal says what is wrong."""
    bad = session.catalog.resolve(args.ref)
    if any(a.kind == DISK for a in bad.artifacts):
        raise UsageError(f"{label(bad)} is a disk image: bisect makes intermediate root file systems, which "
                         "boot otherwise than its disk")
    check = _check(session, bad, args.test)
    testbed = _testbed(session, bad, args.test, args.testbed)
    good = session.catalog.resolve(args.good) if args.good else _good_end(session, bad, args.test, testbed)
    if good.product.name != bad.product.name or good.serial >= bad.serial:
        raise UsageError(f"the good end must be an older version of {bad.product.name} than {label(bad)}, "
                         f"not {label(good)}")
    return Target(args, bad, good, check, testbed)


def begin(session: Session, t: Target, *, actor: str | None = None) -> BisectResult:
    """Keep the bisection of ``t`` as running (owned by this process): what `bisections` shows until it ends."""
    result = BisectResult(image=label(t.bad), test=t.args.test, testbed=t.testbed, good=label(t.good),
                          finding="running", explanation="bisecting", started=utcnow())
    assert t.bad.id is not None and result.started is not None
    result.id = session.catalog.start_bisection(t.bad.id, t.args.test, t.testbed, t.good.id,
                                                result.model_dump_json(), result.started,
                                                owner=str(session.owner.lock_path), actor=actor)
    return result


def carry_out(session: Session, t: Target, begun: BisectResult) -> BisectResult:
    """Bisect (the ends, then the search); the finding is kept in the bisection ``begun``. An error or an
    interruption is kept as such, then raised."""
    clock = time.monotonic()
    moves: list[Move] = []
    culprits: list[Culprit] = []
    confirmed: bool | None = None
    b: Bisection | None = None
    finding, why = "error", ""
    try:
        b = Bisection(session, t)
        unreliable = _ends(b)
        if unreliable is not None:
            finding, why = "unreliable-ends", unreliable
        else:
            moves = _moves(session, t.good, t.bad)
            finding, why, culprits, confirmed = _outcome(b, session, moves)
    except BudgetSpent as exc:
        finding, why = "budget-spent", str(exc)
    except BaseException as exc:
        finding, why = ("interrupted", "interrupted") if isinstance(exc, KeyboardInterrupt) else ("error", str(exc))
        raise
    finally:
        result = begun.model_copy(update=dict(
            finding=finding, explanation=why, signature=b.pinned if b else "", candidates=len(moves),
            culprits=culprits, confirmed=confirmed, steps=b.steps if b else [], test_runs=b.runner.runs if b else 0,
            seconds=round(time.monotonic() - clock, 2), ended=utcnow()))
        assert begun.id is not None and result.ended is not None
        session.catalog.finish_bisection(begun.id, finding, result.model_dump_json(), result.ended)
    return result


def run_bisect(session: Session, args: BisectArgs) -> BisectResult:
    """Bisect ``args.test`` between the good end and ``args.ref`` here; the result is kept in the catalog."""
    t = target(session, args)
    return carry_out(session, t, begin(session, t))
