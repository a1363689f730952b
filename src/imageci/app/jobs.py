"""A worker's operation: run one job (one test × testbed × image digest) and
record its attempt through the server.

The worker holds only its token: it asks the server whether the job's run
still takes attempts and tests the digest the job names, fetches the version
by digest into its own home (once; every artifact checked while it streams),
takes the test from the version's own suite snapshot (its content digest must
equal the job's), runs it on a fresh testbed of this host with the job's
limits (what it prints goes to the server as it comes: a live log, see
``app.livestream``), and writes the attempt with the job's idempotency key — so a job
delivered twice (its first worker died after writing) is recorded once. A
server that is down is waited for: the write is retried until it lands or
``patience`` runs out; only then does the job fail (and its broker message,
not acknowledged before, goes to another worker when this one dies).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from imageci.app import inventory
from imageci.app.bisectruns import intermediate_image
from imageci.app.consumerruns import ConsumerOrigin
from imageci.app.livestream import LiveStreamer
from imageci.app.mirroring import Origin, fetch
from imageci.app.operations import RunArgs
from imageci.app.recording import AttemptIn, AttemptRecorded, MachineFinding, RunState, run_state_op
from imageci.app.session import Session
from imageci.app.versions import config_of, suite_dir_of
from imageci.app.workerholds import WorkerHolds
from imageci.build.intermediate import Move, recipe
from imageci.checks.base import Check
from imageci.checks.consumerkeys import PREFIX as CONSUMER_PREFIX
from imageci.checks.suite import suite_checks
from imageci.definitions.limits import LimitPolicy, Limits
from imageci.definitions.suite import load_suite
from imageci.engine.budget import Budget, default_budget
from imageci.engine.jobs import TASK, Intermediate, Job, JobDone
from imageci.engine.runner import Engine
from imageci.errors import ImageciError, ServerUnavailable, UsageError
from imageci.store import lookups
from imageci.store.models import Version, label
from imageci.testbeds.base import Backend, ImageHandle, Testbed
from imageci.testbeds.output import watching
from imageci.testbeds.registry import make_backend

log = logging.getLogger("imageci.worker")
T = TypeVar("T")


RUNNING_TTL = 2.0  # seconds a worker believes a run it saw running still is


@dataclass(frozen=True)
class Prepared:
    """A job's version as this worker runs it."""

    version: Version
    checks: dict[str, Check]
    image: ImageHandle


class JobOrigin(Origin, ConsumerOrigin, Protocol):
    """The server a worker serves (``client.remote.ApiClient``)."""


    def record(self, run: int, body: AttemptIn, key: str) -> AttemptRecorded: ...



@dataclass
class WorkerContext:
    """What a worker process keeps between jobs: its home, the server, the backends (a VM template or an
    LXD feed made for one job serves the next of the same image) and the checks of each version."""

    session: Session
    origin: JobOrigin
    name: str
    patience: float = 3600.0  # seconds a write waits for an unavailable server
    budget: Budget = field(default_factory=lambda: Budget(default_budget()))
    backends: dict[str, Backend] = field(default_factory=dict)
    _versions: dict[str, Prepared] = field(default_factory=dict)
    _consumers: dict[str, Check] = field(default_factory=dict)
    _running: dict[int, float] = field(default_factory=dict)  # run → until when its "running" is believed
    _lock: threading.Lock = field(default_factory=threading.Lock)
    holds: WorkerHolds = field(init=False)  # failing tests' testbeds kept for a person (a job's ``hold``)

    def __post_init__(self) -> None:
        self.holds = WorkerHolds(self.origin, self.name)

    def backend(self, testbed: str) -> Backend:
        with self._lock:
            if testbed not in self.backends:
                self.backends[testbed] = make_backend(testbed, self.session.settings)
            return self.backends[testbed]

    def finish(self) -> None:
        self.holds.finish()
        for backend in self.backends.values():
            try:
                backend.finish()
            except Exception:  # noqa: BLE001 (one backend's cleanup must not stop the others')
                log.exception("finishing a backend")

    def run_state(self, job: Job) -> RunState | None:
        """The job's run as the server has it; None when it said "running" less than ``RUNNING_TTL`` ago
        (a run that ended since refuses the attempt, and the job is dropped then)."""
        if self._running.get(job.run, 0.0) > time.monotonic():
            return None
        state = self.patient(lambda: self.origin.call(run_state_op, RunArgs(run_id=job.run)))
        if state.status == "running" and state.digest == f"sha256:{job.digest}":
            self._running[job.run] = time.monotonic() + RUNNING_TTL
        return state

    def version(self, image: str, digest: str) -> Prepared:
        """The version ``image`` (NAME@SERIAL on the server) in this home (fetched once), its suite's checks
        by id and its image (the rootfs blob verified once). Two products may hold the same bytes with
        different suites: the version is known by its name and digest (hex), which the server's must be."""
        key = f"{image}@{digest}"
        with self._lock:
            if key in self._versions:
                return self._versions[key]
            detail, local = self.patient(lambda: fetch(self.session, self.origin, image))
            if detail.digest != f"sha256:{digest}":
                raise ImageciError(f"the server's {image} is {detail.digest}, the job tests sha256:{digest}")
            version = self.session.catalog.resolve(local)
            config = config_of(self.session, version)
            suite = load_suite(suite_dir_of(self.session, version))
            checks = {c.id: c for c in suite_checks(suite, None, config)}
            handle = Engine(self.session.catalog, self.session.store, {}).image_handle(version, config)
            self._versions[key] = Prepared(version, checks, handle)
            return self._versions[key]

    def intermediate(self, job: Job, step: Intermediate) -> Prepared:
        """A bisection's intermediate image, made here from its two versions (fetched from the server): the
        bad end's checks; its recipe's digest must be the job's."""
        bad, good = self.version(job.image, step.bad_digest), self.version(step.good, step.good_digest)
        trees = [inventory.tree(self.session, lookups.resolve(self.session.reader, label(p.version)), "bisect").name
                 for p in (good, bad)]
        moves = [Move.of(m) for m in step.moves]
        if recipe(trees[0], trees[1], moves) != job.digest:
            raise ImageciError(f"the job's intermediate image {job.digest[:12]} is not what its recipe makes here "
                               f"from {step.good} and {job.image}")
        stand_in, image = intermediate_image(self.session, trees[0], trees[1], bad.version, moves)
        return Prepared(stand_in, bad.checks, image)

    def consumer(self, job: Job, prepared: Prepared) -> Check | None:
        """A consumer's suite the server registered for the job's product, at the snapshot the job names (fetched
        by digest once)."""
        from imageci.app.consumerruns import fetched_checks

        name = job.test.removeprefix(CONSUMER_PREFIX)
        key = f"{job.test}@{job.test_digest}"
        with self._lock:
            if key not in self._consumers:
                found = self.patient(lambda: fetched_checks(self.session, self.origin, prepared.version.product.name,
                                                            [name]))
                if not found:
                    return None
                self._consumers[key] = found[0]
            return self._consumers[key]

    def patient(self, call: Callable[[], T]) -> T:
        """``call``, tried again while the server is unavailable (with backoff, up to ``patience``)."""
        give_up = time.monotonic() + self.patience
        wait = 0.5
        while True:
            try:
                return call()
            except ServerUnavailable as exc:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise
                pause = min(wait, left)  # the last try comes when the patience ends, not a doubling before
                log.warning("%s; trying again in %.1f s", exc, pause)
                time.sleep(pause)
                wait = min(wait * 2, 30.0)


__all__ = ["TASK", "JobOrigin", "WorkerContext", "open_context", "run_job", "run_payload"]


def open_context(session: Session, origin: JobOrigin, name: str) -> WorkerContext:
    """A worker's context on ``session``'s home: writes wait for the server up to half the visibility
    timeout (a job that waits longer is delivered again anyway); the engine's budget from the settings."""
    s = session.settings
    return WorkerContext(session, origin, name, patience=s.visibility_timeout / 2,
                         budget=Budget(default_budget(s.memory_budget_mb, s.cpu_budget)))


def run_payload(ctx: WorkerContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A job as the broker carries it (JSON) → the worker's answer (JSON)."""
    return run_job(ctx, Job.model_validate(payload)).model_dump()


def _dropped(ctx: WorkerContext, why: str) -> JobDone:
    return JobDone(attempt_id=0, created=False, verdict="", reason="", worker=ctx.name, seconds=0.0, dropped=why)


def _taken_later(*_: object) -> None:
    """(``Engine.hold`` for a job: the worker takes the failing testbed once the server recorded the attempt.)"""


def _hold(ctx: WorkerContext, job: Job, recorded: AttemptRecorded, testbed: Testbed) -> None:
    if not recorded.created:  # an earlier delivery recorded it: that one's testbed was the test's
        testbed.close()
        return
    try:
        ctx.holds.keep(job.run, recorded.id, job.test, job.testbed, testbed, job.hold)
    except ImageciError as exc:  # (removed as any other testbed) the verdict stands; say why nothing is held
        log.warning("%s on %s is not held: %s", job.test, job.testbed, exc)


def run_job(ctx: WorkerContext, job: Job) -> JobDone:
    """Run ``job`` here and record its attempt on the server (see the module's text)."""
    state = ctx.run_state(job)
    if state is not None and state.digest != f"sha256:{job.digest}":
        raise ImageciError(f"run {job.run} on the server tests {state.digest}, not the job's sha256:{job.digest}: "
                           "is the coordinator on the server's home?")
    if state is not None and state.status != "running":
        return _dropped(ctx, f"run {job.run} is {state.status}")
    prepared = ctx.intermediate(job, job.intermediate) if job.intermediate else ctx.version(job.image, job.digest)
    check = prepared.checks.get(job.test) if not job.test.startswith(CONSUMER_PREFIX) else ctx.consumer(job, prepared)
    if check is None:
        raise ImageciError(f"{job.image}'s suite has no test {job.test!r}")
    if check.digest != job.test_digest:
        raise ImageciError(f"{job.test} in {job.image}'s suite has digest {check.digest}, the job "
                           f"{job.test_digest}: only the version's own suite (and the server's consumers, at their "
                           "newest snapshot) run on workers")
    engine = Engine(ctx.session.catalog, ctx.session.store, {job.testbed: ctx.backend(job.testbed)},
                    owner=str(ctx.session.owner.lock_path), budget=ctx.budget,
                    limits=LimitPolicy(override=Limits(**job.limits)), complaints=job.complaints,
                    fail_on=frozenset(job.fail_on), hold=_taken_later if job.hold else None)
    # Each delivery streams to its own live log: a job started again elsewhere does not write into the old one.
    with LiveStreamer(ctx.origin, job.run, f"{job.key[:110]}.{secrets.token_hex(4)}", job.test, job.testbed,
                      ctx.name) as live, \
            watching(live.feed):
        outcome, started, ended = engine.attempt_once(prepared.image, check, job.testbed)
    kept = engine.kept_log(check, outcome)
    body = AttemptIn(test=job.test, test_digest=job.test_digest, testbed=job.testbed, attempt=job.attempt,
                     started=started, ended=ended, exit_code=outcome.exit_code,
                     verdict=outcome.verdict.value,  # type: ignore[arg-type]
                     reason=outcome.reason, log=kept.decode(errors="replace") if kept else None, worker=ctx.name,
                     findings=[MachineFinding(kind=f.kind, text=f.text) for f in outcome.findings])  # type: ignore[arg-type]
    failed = engine.take_failed()  # kept for a person (the job's ``hold``), once the attempt is recorded
    try:
        recorded = ctx.patient(lambda: ctx.origin.record(job.run, body, job.key))
    except UsageError as exc:
        if failed is not None:
            failed.close()
        if "takes no more attempts" in str(exc):  # the run ended while this ran (interrupted)
            return _dropped(ctx, str(exc))
        raise
    except BaseException:
        if failed is not None:
            failed.close()
        raise
    if failed is not None:
        _hold(ctx, job, recorded, failed)
    return JobDone(attempt_id=recorded.id, created=recorded.created, verdict=outcome.verdict.value,
                   reason=outcome.reason, worker=ctx.name, seconds=(ended - started).total_seconds())
