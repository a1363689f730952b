"""Running one test on the images a bisection looks at: the two ends (versions in the catalog) and the
intermediate images made from their trees (``build.intermediate``). Each run is recorded like any
other (isolation, limits, logs; its record says ``bisect`` and the recipe); an intermediate is never a
version and never on a channel: its attempts are keyed by its recipe's digest."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imageci.app.session import Session
from imageci.app.versions import config_of
from imageci.build.intermediate import Move, recipe, synthesize
from imageci.checks.base import Check
from imageci.engine.runner import Engine
from imageci.policy.bisection import signature
from imageci.store.models import Product, Version, label
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.registry import make_backend

if TYPE_CHECKING:
    from celery import Celery

Todo = tuple[Version, ImageHandle, str, Sequence[Move] | None]  # a run to make: moves None for a version
TREE_TESTBEDS = ("sandbox", "qemu")  # the testbeds that run an image from its unpacked tree


@dataclass(frozen=True)
class Ran:
    """One run of the test on one image."""

    run: int
    verdict: str
    exit_code: int | None
    signature: str  # policy.bisection.signature of it ("" for a pass)
    log_digest: str | None
    reason: str


@dataclass
class Ends:
    """The two versions and their unpacked trees (by rootfs digest, in the rootfs cache)."""

    good: Version
    bad: Version
    good_tree: str
    bad_tree: str


def intermediate_image(session: Session, good_tree: str, bad_tree: str, bad: Version, moves: Sequence[Move],
                       *, make: bool = True) -> tuple[Version, ImageHandle]:
    """Good + ``moves`` as an image to test (made in the rootfs cache unless ``make`` is false: its workers
    make it) and the stand-in version its runs are recorded with: the bad end's (a bisection's runs are
    the bad version's), keyed by the recipe's digest, never on a channel."""
    cache = session.settings.rootfs_cache
    digest = recipe(good_tree, bad_tree, moves)
    if make:
        synthesize(cache, good_tree, bad_tree, moves)
    stand_in = Version(id=bad.id, product=Product(name=bad.product.name), serial=f"bisect-{digest[:12]}",
                       digest=digest, architecture=bad.architecture, artifacts=[])
    image = ImageHandle(digest=digest, name=bad.product.name, rootfs_tar=Path(cache / f"{digest}.synthesized"),
                        architecture=bad.architecture, config=config_of(session, bad))
    return stand_in, image


class StepRunner:
    """Runs ``check`` on ``testbed``, recording each run with ``options`` (what bisection it belongs to);
    ``executor`` ``celery``: each run is a job on the workers (the server's home), which make the
    intermediate images themselves from the two versions."""

    def __init__(self, session: Session, check: Check, testbed: str, ends: Ends, jobs: int,
                 options: dict[str, object], *, executor: str = "local") -> None:
        self.session, self.check, self.testbed, self.ends = session, check, testbed, ends
        self.jobs, self.options, self.executor = max(1, jobs), options, executor
        self.backend = make_backend(testbed, session.settings)
        self.runs = 0
        self._lock = threading.Lock()
        self._broker: Celery | None = None

    def _engine(self, version: Version, moves: Sequence[Move] | None) -> Engine:
        dispatcher = None
        if self.executor == "celery":
            from imageci.app.workers import broker
            from imageci.engine.fanout import CeleryDispatcher
            from imageci.engine.jobs import Intermediate

            with self._lock:  # one Celery application (and its connections) for every step
                self._broker = self._broker or broker(self.session.settings)
            bad = self.ends.bad
            step = Intermediate(good=label(self.ends.good), good_digest=self.ends.good.digest, bad_digest=bad.digest,
                                moves=[m.as_dict() for m in moves]) if moves is not None else None
            dispatcher = CeleryDispatcher(self._broker, label(bad if moves is not None else version),
                                          intermediate=step)
        return Engine(self.session.catalog, self.session.store, {self.testbed: self.backend}, jobs=1,
                      owner=str(self.session.owner.lock_path), dispatcher=dispatcher)

    def _run(self, version: Version, image: ImageHandle, what: str, moves: Sequence[Move] | None) -> Ran:
        report = self._engine(version, moves).run(version, [self.check], [self.testbed], rerun_all=True, image=image,
                                                  options={**self.options, "bisect_step": what})
        with self._lock:
            self.runs += 1
        attempt = report.results[0].attempts[-1]
        log = ""
        if attempt.log_digest and self.session.store.has(attempt.log_digest):
            log = self.session.store.read_bytes(attempt.log_digest).decode("utf-8", "replace")
        sig = signature(attempt.verdict, attempt.exit_code, log) if attempt.verdict != "pass" else ""
        return Ran(report.run_id, attempt.verdict, attempt.exit_code, sig, attempt.log_digest, attempt.reason)

    def version(self, version: Version, times: int, what: str) -> list[Ran]:
        """``times`` runs of the test on a version of the catalog."""
        image = self._engine(version, None).image_handle(version, config_of(self.session, version))
        return self._parallel([(version, image, what, None)] * times)

    def intermediate(self, moves: Sequence[Move], times: int, what: str) -> list[Ran]:
        """``times`` runs of the test on good + ``moves`` (made first, once per recipe)."""
        return self._parallel([self._made(moves, what)] * times)

    def intermediates(self, sets: Sequence[Sequence[Move]], what: str) -> list[Ran]:
        """One run on each of several intermediates (made and run up to ``jobs`` at once)."""
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="imageci-bisect") as pool:
            made = list(pool.map(lambda moves: self._made(moves, what), sets))
        return self._parallel(made)

    def _made(self, moves: Sequence[Move], what: str) -> Todo:
        stand_in, image = intermediate_image(self.session, self.ends.good_tree, self.ends.bad_tree, self.ends.bad,
                                             moves, make=self.executor != "celery")
        return stand_in, image, what, moves

    def _parallel(self, todo: Sequence[Todo]) -> list[Ran]:
        if self.jobs == 1 or len(todo) == 1:
            return [self._run(*t) for t in todo]
        with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="imageci-bisect") as pool:
            return list(pool.map(lambda t: self._run(*t), todo))
