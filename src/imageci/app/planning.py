"""What a test run will do, decided once for every interface: which checks
(from the version's suite, DEP-8 trees, container-structure-test files and
testinfra modules), on which testbeds, with which limits, freshness and
flake policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imageci.app.session import Session
from imageci.app.testrequest import Executor as Executor  # re-exported: planning is where interfaces ask
from imageci.app.testrequest import Fresh as Fresh
from imageci.app.testrequest import TestRequest as TestRequest
from imageci.app.testrequest import executor_for, testbeds_for

if TYPE_CHECKING:
    from imageci.app.consumerruns import ConsumerOrigin
from imageci.app.versions import config_of, suite_of
from imageci.app.waivers import flake_policy
from imageci.capabilities import AUTO
from imageci.checks.base import Check
from imageci.checks.consumer import ConsumerCheck
from imageci.checks.consumerkeys import PREFIX as CONSUMER_PREFIX
from imageci.checks.suite import suite_checks
from imageci.definitions.limits import LimitPolicy, parse_assignments
from imageci.definitions.suite import Suite
from imageci.engine.waivers import WaiverFn
from imageci.errors import UsageError
from imageci.formats.oci import ImageConfig, image_config
from imageci.store import lookups
from imageci.store.catalog import VersionDeleted
from imageci.store.models import State, Version, as_utc, label
from imageci.store.objects import CorruptBlobError, StoreUnavailable

log = logging.getLogger("imageci.app")

@dataclass
class TestPlan:
    __test__ = False
    request: TestRequest
    version: Version
    checks: list[Check]
    testbeds: list[str]
    fresh: Fresh
    jobs: int
    limits: LimitPolicy
    waiver: WaiverFn | None
    suite_dir: Path | None = None
    suite: Suite | None = None
    fetched: list[Path] = field(default_factory=list)  # source trees fetched for --dep8-package
    executor: Executor = "local"
    config: ImageConfig | None = None  # the image's runtime configuration, as the checks were made with
    unfetched: str = ""  # why the image's bytes could not be fetched (then every test is an error of the testbed)


def _consumer_checks(session: Session, version: Version, request: TestRequest, named: list[str],
                     executor: Executor, origin: ConsumerOrigin | None) -> list[Check]:
    """The consumers' suites this run takes: those named (consumer:NAME), else all of the product's when the
    whole suite runs (not with --tests, nor --dep8/--structure/--testinfra alone, nor --no-consumers). With
    ``origin``, the consumers are the server's (a remote run of one of its versions)."""

    def found_for(names: list[str] | None) -> list[ConsumerCheck]:
        from imageci.app import consumerruns  # (what a run of named tests never needs)

        if origin is not None:
            return consumerruns.fetched_checks(session, origin, version.product.name, names)
        return consumerruns.checks_for(session, version, names)

    if named:
        found = found_for(named)
        unknown = sorted(set(named) - {c.spec.name for c in found})
        if unknown:
            have = [c.spec.name for c in found_for(None)]
            raise UsageError(f"no consumer {', '.join(unknown)} of {version.product.name}; its consumers: "
                             f"{', '.join(have) or 'none'} (imageci consumers list)")
    elif request.consumers and not request.tests and (not request.extra or request.suite is not None):
        found = found_for(None)
    else:
        return []
    return list(found)


def _extra_checks(session: Session, request: TestRequest, config: ImageConfig) -> tuple[list[Check], list[Path]]:
    """The checks of --structure, --testinfra, --dep8 and --dep8-package (their kinds imported only when asked
    for: a run of the suite's scripts loads no DEP-8, structure or testinfra parser), and the source trees
    fetched for --dep8-package."""
    checks: list[Check] = []
    if request.structure:
        from imageci.checks.structure import structure_checks
        from imageci.definitions.structure import load_structure

        for path in request.structure:
            checks += structure_checks(load_structure(path), config)
    if request.testinfra:
        from imageci.checks.testinfra import checks_from_testinfra

        for path in request.testinfra:
            checks += checks_from_testinfra(path)
    if not (request.dep8 or request.dep8_packages):
        return checks, []
    from imageci.checks.dep8 import dep8_checks
    from imageci.checks.depcache import DependencyCache
    from imageci.definitions.dep8 import fetch_source, load_dep8

    fetched = [fetch_source(p, session.settings.home / "sources") for p in request.dep8_packages]
    for tree in [*request.dep8, *fetched]:
        checks += dep8_checks(load_dep8(tree), DependencyCache(session.settings.home / "cache" / "test-deps"))
    return checks, fetched


def plan_tests(session: Session, request: TestRequest, *, consumers_from: ConsumerOrigin | None = None) -> TestPlan:
    """The run ``request`` asks for; bad input fails here, before anything runs. ``consumers_from``: the
    server whose registered consumers run (a remote run of a version fetched from it)."""
    override = parse_assignments(request.limits)
    version = session.catalog.resolve(request.ref)
    if version.state == State.DELETED:
        deleted = next((e for e in reversed(lookups.events(session.reader, version.id)) if e.to_state == State.DELETED),
                       None)
        raise VersionDeleted(f"{label(version)} was deleted by retention" + (
            f" on {as_utc(deleted.at):%Y-%m-%d} ({deleted.reason})" if deleted else "") +
            ": its bytes are gone; its record, events and results are kept")
    config, unfetched = _config(session, version)
    checks: list[Check] = []
    suite: Suite | None = None
    named = [t for t in request.tests or [] if not t.startswith(CONSUMER_PREFIX)]
    consumers = [t.removeprefix(CONSUMER_PREFIX) for t in request.tests or [] if t.startswith(CONSUMER_PREFIX)]
    if not request.extra or request.suite is not None:  # --dep8 or --structure alone runs only those
        suite = suite_of(session, version, request.suite)
        if not request.tests or named:
            checks += suite_checks(suite, None if request.extra else (named or None), config)
    executor = executor_for(request, session.settings.executor)
    checks += _consumer_checks(session, version, request, consumers, executor, consumers_from)
    extra, fetched = _extra_checks(session, request, config)
    checks += extra
    if request.extra and named:
        by_id = {c.id: c for c in checks}
        unknown = [t for t in named if t not in by_id]
        if unknown:
            raise UsageError(f"no such test: {', '.join(unknown)}; available: {', '.join(by_id)}")
        checks = [by_id[t] for t in named] + [c for c in checks if c.id.startswith(CONSUMER_PREFIX)]
    if executor == "celery" and (request.extra or request.suite is not None):
        raise UsageError("with --executor celery only the version's own suite runs (workers take each test from "
                         "the suite stored with the version); --suite, --dep8, --dep8-package, --structure and "
                         "--testinfra run with --executor local")
    testbeds = testbeds_for(request, suite)
    if executor == "celery" and AUTO in testbeds:
        raise UsageError("--testbed auto chooses among this host's testbeds: run it with --executor local (the "
                         "workers' jobs name their testbed)")
    fresh: Fresh = request.fresh or (suite.fresh if suite else "test")
    return TestPlan(
        request=request, version=version, checks=checks, testbeds=testbeds, fresh=fresh,
        jobs=request.jobs or session.settings.jobs,
        limits=suite.limit_policy(override) if suite else LimitPolicy(override=override),
        waiver=flake_policy(session, version, suite, checks, request.quarantine),
        suite_dir=suite.path if suite else None, suite=suite, fetched=fetched, executor=executor, config=config,
        unfetched=unfetched)


def _config(session: Session, version: Version) -> tuple[ImageConfig, str]:
    """The version's configuration; while its blob cannot be fetched, imageci's default and why (the run
    still plans its tests, and records each as an error of the testbed: nothing can run without the image)."""
    try:
        return config_of(session, version), ""
    except (StoreUnavailable, CorruptBlobError) as exc:
        return image_config(version.product.name, version.digest), str(exc)
