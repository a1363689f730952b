"""Run checks against one image on one or more testbeds.

Every attempt is recorded. Each test gets a fresh testbed. ``retries`` re-runs
only tests that never passed; a check that already passed for the same image
digest + test digest + testbed is not re-run unless ``rerun_all``.
"""

from __future__ import annotations

import json
import threading
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from imageci.capabilities import AUTO
from imageci.checks import complaints
from imageci.checks.base import Check, Outcome
from imageci.checks.findings import reusable
from imageci.definitions.limits import DEFAULTS, LimitPolicy, Limits
from imageci.engine.budget import Budget, default_budget
from imageci.engine.jobs import JobDone
from imageci.engine.results import RunReport, TestResult
from imageci.engine.schedule import Placer, Planned, Schedule, explained, unfetchable
from imageci.engine.waivers import WaiverFn
from imageci.errors import ImageciError
from imageci.formats.oci import ImageConfig
from imageci.store.blobs import BlobStore
from imageci.store.catalog import Catalog
from imageci.store.models import Attempt, RunStatus, Version, utcnow
from imageci.store.objects import CorruptBlobError, Pin, StoreUnavailable
from imageci.store.states import DISK, INCUS_METADATA, LXD_METADATA, SQUASHFS
from imageci.testbeds.base import Backend, ImageHandle, LxdFile, LxdForm, Testbed
from imageci.testbeds.output import bounded
from imageci.verdicts import Verdict

KnownFn = Callable[[str, bytes], "tuple[str, int] | None"]
EventFn = Callable[[str, TestResult, Attempt | None], None]
HoldFn = Callable[[TestResult, Attempt, Testbed], None]  # a failing attempt's testbed, for a person to enter


class Dispatcher(Protocol):
    """Runs a run's tests elsewhere (``engine.fanout``: Celery workers), each as one job whose attempt the
    worker records through the server; yields each test with what its job ended with — the worker's
    answer, or why no attempt was recorded (a worker's failure: the engine records it as an error)."""

    def dispatch(self, run_id: int, image: ImageHandle, todo: Sequence[TestResult],
                 limits: Callable[[Check], Limits]) -> Iterator[tuple[TestResult, JobDone | str]]: ...


@dataclass
class Engine:
    catalog: Catalog
    store: BlobStore
    backends: dict[str, Backend]
    jobs: int = 1
    on_event: EventFn | None = None
    budget: Budget = field(default_factory=lambda: Budget(default_budget()))
    _live: set[Testbed] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _aborting: threading.Event = field(default_factory=threading.Event)
    _kept: threading.local = field(default_factory=threading.local)  # per worker: testbeds kept for reuse
    fresh: str = "test"  # "test": a new testbed per test; "suite": reuse between non-destructive tests
    waiver: WaiverFn | None = None  # flake policy: quarantine, grace for new tests
    owner: str | None = None  # the lock file this process holds (imageci.owners): a killed run is found by it
    limits: LimitPolicy = field(default_factory=LimitPolicy)  # memory, pids, disk, output, log per test
    dispatcher: Dispatcher | None = None  # None: tests run here, in the pool; else as jobs on workers
    known: KnownFn | None = None  # a failure's known label and its re-runs (test id, log) → (tracker, retry)
    hold: HoldFn | None = None  # takes each failing test's testbed (not removed then): ``--hold-on-failure``
    held_backends: set[str] = field(default_factory=set)  # testbeds of which a test's was held
    complaints: bool = True  # read the machine's own complaints around each test (``checks.complaints``)
    fail_on: frozenset[str] = frozenset()  # the kinds of complaint that fail a test that passed

    def _emit(self, what: str, result: TestResult, attempt: Attempt | None = None) -> None:
        if self.on_event:
            self.on_event(what, result, attempt)

    def image_handle(self, version: Version, config: ImageConfig | None = None) -> ImageHandle:
        """What a testbed needs: the verified rootfs blob, architecture and (when given) configuration."""
        rootfs = next((a for a in version.artifacts if a.kind == "rootfs"), None)
        if rootfs is None:
            raise ImageciError(f"{version.product.name}@{version.serial} has no rootfs artifact")
        pins = [self.store.pin(rootfs.digest)]  # held as long as the handle: a cache keeps them
        lxd, absent = self._lxd_form(version, pins)
        disk = next((a for a in version.artifacts if a.kind == DISK), None)
        if disk is not None:
            pins.append(self.store.pin(disk.digest))
        firmware = json.loads(version.build_info or "{}").get("disk", {}).get("firmware") or []
        return ImageHandle(digest=version.digest, name=version.product.name, rootfs_tar=pins[0].path,
                           architecture=version.architecture, config=config, lxd=lxd, lxd_absent=absent,
                           disk=pins[-1].path if disk is not None else None,
                           firmware=tuple(str(f) for f in firmware), pins=tuple(pins))

    def _lxd_form(self, version: Version, pins: list[Pin]) -> tuple[LxdForm | None, str]:
        """The version's LXD form (its files pinned in ``pins``), or why it has none."""
        info = json.loads(version.build_info or "{}").get("lxd")
        if not isinstance(info, dict):
            return None, "it was made before versions had an LXD form (build or import it again)"
        if not isinstance(info.get("fingerprint"), str):
            return None, f"it has no LXD form: {info.get('error', 'it was published without one')}"
        held = {a.digest: self.store.pin(a.digest) for a in version.artifacts
                if a.kind in (LXD_METADATA, INCUS_METADATA, SQUASHFS)}
        pins.extend(held.values())
        files = tuple(LxdFile(a.kind, a.filename, a.digest, a.size, held[a.digest].path)
                      for a in version.artifacts if a.kind in (LXD_METADATA, INCUS_METADATA, SQUASHFS))
        if not {LXD_METADATA, SQUASHFS} <= {f.kind for f in files}:
            return None, "its LXD form is incomplete (no metadata tarball or no squashfs)"
        return LxdForm(serial=version.serial, os=str(info["os"]), release=str(info["release"]),
                       variant=str(info["variant"]), fingerprint=str(info["fingerprint"]), files=files), ""

    def limits_for(self, check: Check) -> Limits:
        return self.limits.for_test(check.id, check.limits)

    def kept_log(self, check: Check, outcome: Outcome) -> bytes:
        """What is kept of an attempt's log: its head and tail within the test's ``log`` limit."""
        keep = self.limits_for(check).log or DEFAULTS.log
        assert keep is not None
        return bounded(outcome.log, keep)

    def _record(self, run_id: int, image: ImageHandle, result: TestResult, outcome: Outcome,
                started: datetime, ended: datetime) -> Attempt:
        log_digest = self.store.put_bytes(self.kept_log(result.check, outcome)).digest if outcome.log else None
        attempt = self.catalog.record_attempt(Attempt(
            run_id=run_id, image_digest=image.digest, test_id=result.check.id, test_digest=result.check.digest,
            testbed=result.testbed, attempt=len(result.attempts) + 1, started_at=started, ended_at=ended,
            exit_code=outcome.exit_code, verdict=outcome.verdict.value, reason=outcome.reason,
            log_digest=log_digest, known=self._known(result, outcome),
            findings=complaints.encoded(outcome.findings)))
        result.attempts.append(attempt)
        self._emit("attempt", result, attempt)
        return attempt

    def _known(self, result: TestResult, outcome: Outcome) -> str | None:
        """The tracker of the known failure this failing attempt's log matches (None: none)."""
        if self.known is None or outcome.verdict not in (Verdict.FAIL, Verdict.ERROR):
            return None
        found = self.known(result.check.id, outcome.log)
        if found is None:
            return None
        result.known_retries = max(result.known_retries, found[1])
        return found[0]

    def _execute(self, image: ImageHandle, result: TestResult) -> Outcome:
        """Run one attempt in a fresh testbed; with ``fresh="suite"`` a worker
        keeps its testbed for the next test of the same testbed and needs,
        except after a destructive test or an error."""
        backend = self.backends[result.testbed]
        needs = frozenset(result.check.needs)
        limits = self.limits_for(result.check)
        key = (result.testbed, needs, limits)
        reuse = self.fresh == "suite" and not result.check.destructive
        kept: dict[tuple[str, frozenset[str], Limits], Testbed] = self._kept.__dict__.setdefault("beds", {})
        testbed: Testbed | None = kept.pop(key, None) if reuse else None
        keep = failing = False
        try:
            if testbed is None:
                testbed = backend.create(image, needs, limits)
                with self._lock:
                    self._live.add(testbed)
                testbed.open()
            window = complaints.opening(testbed) if self.complaints else None
            outcome = result.check.run(testbed)
            found = complaints.closing(testbed, window)
            outcome = complaints.judged(explained(outcome, testbed.limit_notes()), found, self.fail_on)
            keep = reuse and outcome.verdict != Verdict.ERROR
            failing = outcome.verdict in (Verdict.FAIL, Verdict.ERROR)
            return outcome
        except ImageciError as exc:
            reason = str(exc).splitlines()[0]
            log = str(exc).encode() + (b"\n" + exc.log if exc.log else b"")
            notes = testbed.limit_notes() if testbed is not None else []
            return explained(Outcome(Verdict.ERROR, f"testbed error: {reason}", None, log), notes)
        except Exception as exc:  # a harness bug must not take the run down with it
            return Outcome(Verdict.ERROR, f"harness error: {type(exc).__name__}: {exc}", None,
                           traceback.format_exc().encode())
        finally:
            if testbed is not None:
                if failing and self.hold is not None and not self._aborting.is_set():
                    with self._lock:  # a person's now (``hold``), once its attempt is recorded
                        self._live.discard(testbed)
                    self._kept.failed = testbed
                elif keep and not self._aborting.is_set():
                    kept[key] = testbed
                else:
                    self._discard(testbed)

    def _discard(self, testbed: Testbed) -> None:
        try:
            testbed.close()
        finally:
            with self._lock:
                self._live.discard(testbed)

    def _attempt(self, run_id: int, image: ImageHandle, result: TestResult) -> None:
        with self.budget.hold(self.backends[result.testbed].cost):
            if self._aborting.is_set():  # waited for resources while the run was interrupted
                return
            started = utcnow()
            outcome = self._execute(image, result)
            ended = max(utcnow(), started)  # before the budget lets the next test start
        if self._aborting.is_set():  # killed by Ctrl-C: not the image's fault
            outcome = Outcome(Verdict.ERROR, "interrupted", None, outcome.log)
        attempt = self._record(run_id, image, result, outcome, started, ended)
        failed = self.take_failed()
        if failed is not None and self.hold is not None:
            self.held_backends.add(result.testbed)
            self.hold(result, attempt, failed)

    def take_failed(self) -> Testbed | None:
        """The testbed of this thread's last failing attempt, kept for ``hold`` (not removed: the caller's now)."""
        failed: Testbed | None = self._kept.__dict__.pop("failed", None)
        return failed

    def attempt_once(self, image: ImageHandle, check: Check, testbed: str) -> tuple[Outcome, datetime, datetime]:
        """One attempt of ``check`` on ``testbed``, unrecorded (a worker's job; its coordinator decided
        reuse and waivers): a verdict reached without a testbed (missing capabilities, an unusable
        backend), or a run in a fresh testbed. (outcome, started, ended)."""
        item = self.plan(image, [check], [testbed], rerun_all=True).items[0]
        if item.decided is not None:
            now = utcnow()
            return item.decided, now, now
        with self.budget.hold(self.backends[testbed].cost):
            started = utcnow()
            outcome = self._execute(image, item.result)
            ended = max(utcnow(), started)
        return outcome, started, ended

    def _reusable(self, passed: Attempt | None) -> Attempt | None:
        """An earlier pass, unless the machine complained in it of what now fails a test (``fail_on``)."""
        return passed if passed is None or reusable(passed.findings, self.fail_on) else None

    def plan(self, image: ImageHandle, checks: Sequence[Check], testbeds: Sequence[str], *,
             rerun_all: bool = False) -> Schedule:
        """Decide, without running or recording anything, what each check × testbed gets: an earlier
        pass of the same bytes and test (reused unless ``rerun_all``), a verdict reached without a
        testbed (waived, precheck, wrong testbed, unusable backend, missing capabilities), or a run."""
        here = self.dispatcher is None  # else each worker decides what its own testbeds cannot do
        unusable = {tb: why for tb in testbeds if here and tb != AUTO and (why := self.backends[tb].why_not(image))}
        placer = Placer(image, self.backends)
        items: list[Planned] = []
        for check in checks:
            for asked in testbeds:
                tb, nowhere = placer.place(check) if asked == AUTO else (asked, None)
                item = Planned(TestResult(check, tb))
                items.append(item)
                if not rerun_all:
                    item.cached = self._reusable(self.catalog.passing_attempt(image.digest, check.id, check.digest,
                                                                              tb))
                    if item.cached is not None:
                        continue
                waiver = self.waiver(check.id, tb) if self.waiver is not None else None
                if waiver is not None and waiver.mode == "warn":
                    item.result.waived = waiver.reason
                pre = Outcome(Verdict.SKIP, waiver.reason) if waiver is not None and waiver.mode == "skip" else None
                pre = pre or check.precheck() or (Outcome(Verdict.SKIP, nowhere) if nowhere else None)
                only = check.testbeds
                if pre is None and only and tb not in only:
                    pre = Outcome(Verdict.SKIP, f"runs only on: {', '.join(only)}")
                if pre is None and tb in unusable:
                    pre = Outcome(Verdict.SKIP, f"testbed {tb}: {unusable[tb]}")
                if pre is None and here:
                    missing = sorted(set(check.needs) - set(self.backends[tb].capabilities(image)))
                    if missing:
                        why = self.backends[tb].lacking(missing)
                        pre = Outcome(Verdict.SKIP, f"testbed {tb} lacks: {', '.join(missing)}"
                                      + (f" ({why})" if why else ""))
                item.decided = pre
        return Schedule(image, list(testbeds), items)

    def execute(self, version: Version, schedule: Schedule, *, retries: int = 0, rerun_all: bool = False,
                options: dict[str, object] | None = None, repeats: int | None = None) -> RunReport:
        """Record a run of ``schedule`` (``repeats``: the run it repeats) and carry it out: reused passes and
        decided verdicts first, then the tests in the pool, then retries of what never passed."""
        image, testbeds = schedule.image, schedule.testbeds
        run_id = self.catalog.start_run(image.digest, version.id, {
            "testbeds": testbeds, "retries": retries, "rerun_all": rerun_all,
            "tests": list(dict.fromkeys(i.result.check.id for i in schedule.items)), **(options or {})},
            owner=self.owner, repeats=repeats)
        started = utcnow()
        results = [i.result for i in schedule.items]
        for item in schedule.items:
            if item.cached is not None:
                item.result.attempts.append(item.cached)
                item.result.cached = True
                self._emit("cached", item.result, item.cached)
            elif item.decided is not None:
                now = utcnow()
                self._record(run_id, image, item.result, item.decided, now, now)
        todo = schedule.to_run
        interrupted = False
        for tb, count in Counter(r.testbed for r in todo).items():
            self.backends[tb].expect(image, count)
        try:
            self._pool(run_id, image, todo)
            for _ in range(retries):
                again = [r for r in todo if not any(a.verdict == Verdict.PASS for a in r.attempts)
                         and r.attempts and r.attempts[-1].verdict in (Verdict.FAIL, Verdict.ERROR)]
                if not again:
                    break
                self._pool(run_id, image, again)
            self._known_again(run_id, image, todo, retries)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            with self._lock:
                leftover = list(self._live)
            for bed in leftover:  # testbeds kept for reuse
                self._discard(bed)
            for tb in (t for t in self.backends if t in testbeds or AUTO in testbeds):  # (a held testbed's holder
                # finishes its backend once it is gone)
                if tb in self.held_backends:
                    self.backends[tb].finish_but_held()
                else:
                    self.backends[tb].finish()
            for r in results:
                if r.attempts:
                    r.finalize()
            results = [r for r in results if r.attempts]
            report = RunReport(run_id, version, results, started, utcnow(), interrupted)
            self.catalog.finish_run(run_id, int(report.exit_code),
                                    RunStatus.INTERRUPTED if interrupted else RunStatus.FINISHED)
        return report  # interrupted runs come back too (exit 130), so their reports can be written

    def run(self, version: Version, checks: Sequence[Check], testbeds: Sequence[str], *, retries: int = 0,
            rerun_all: bool = False, options: dict[str, object] | None = None,
            image: ImageHandle | None = None, config: ImageConfig | None = None, unfetched: str = "",
            repeats: int | None = None) -> RunReport:
        """:meth:`plan` then :meth:`execute`. ``image``: the version's handle, when the caller made it;
        else made here with ``config``. An image whose bytes cannot be fetched (the object store is away, an
        object was changed; ``unfetched`` says why, when the caller already knows) is every test's ``error``:
        the testbed could not be set up, the image is not at fault."""
        try:
            if unfetched:
                raise StoreUnavailable(unfetched)
            image = image or self.image_handle(version, config)
        except (StoreUnavailable, CorruptBlobError) as exc:
            return self.execute(version, unfetchable(version, checks, testbeds, str(exc)), options=options,
                                repeats=repeats)
        schedule = self.plan(image, checks, testbeds, rerun_all=rerun_all)
        return self.execute(version, schedule, retries=retries, rerun_all=rerun_all, options=options, repeats=repeats)

    def _dispatch(self, run_id: int, image: ImageHandle, todo: Sequence[TestResult]) -> None:
        """The tests as jobs on workers: each attempt a worker recorded is read back from the catalog."""
        assert self.dispatcher is not None
        for result, done in self.dispatcher.dispatch(run_id, image, todo, self.limits_for):
            attempt = self.catalog.attempt(done.attempt_id) if isinstance(done, JobDone) and not done.dropped \
                else None
            if attempt is not None:
                result.attempts.append(attempt)
                self._emit("attempt", result, attempt)
                continue
            if isinstance(done, JobDone):
                why = done.dropped or f"worker {done.worker} recorded attempt {done.attempt_id}, which the " \
                    "catalog lacks (is the coordinator on the server's home?)"
            else:
                why = done
            now = utcnow()
            self._record(run_id, image, result, Outcome(Verdict.ERROR, f"worker error: {why}", None,
                                                        f"{why}\n".encode()), now, now)

    def _known_again(self, run_id: int, image: ImageHandle, todo: Sequence[TestResult], retries: int) -> None:
        """A failure that a known failure with ``retry`` matched runs again, up to that many times beyond
        ``retries``, while its newest attempt is still that known failure."""
        for _ in range(max((r.known_retries for r in todo), default=0)):
            again = [r for r in todo if r.attempts and r.attempts[-1].known and not any(
                a.verdict == Verdict.PASS for a in r.attempts) and len(r.attempts) <= retries + r.known_retries]
            if not again:
                break
            self._pool(run_id, image, again)

    def _pool(self, run_id: int, image: ImageHandle, todo: Sequence[TestResult]) -> None:
        if not todo:
            return
        if self.dispatcher is not None:
            self._dispatch(run_id, image, todo)
            return
        with ThreadPoolExecutor(max_workers=max(1, self.jobs), thread_name_prefix="imageci-test") as pool:
            futures = [pool.submit(self._attempt, run_id, image, r) for r in todo]
            try:
                for fut in as_completed(futures):
                    fut.result()
            except BaseException:
                self._aborting.set()
                for fut in futures:
                    fut.cancel()
                with self._lock:
                    live = list(self._live)
                for tb in live:  # kill running commands so the workers return now
                    tb.close()
                raise
