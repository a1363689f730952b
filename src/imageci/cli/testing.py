"""Shared by ``run``, ``test`` and ``pipeline``: run checks, show progress, write reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from imageci.build.oci import image_config
from imageci.checks.base import Check
from imageci.checks.dep8 import dep8_checks
from imageci.checks.depcache import DependencyCache
from imageci.checks.structure import structure_checks
from imageci.checks.testinfra import checks_from_testinfra
from imageci.cli.context import Context, checks_of, console, err_console
from imageci.definitions.dep8 import fetch_source, load_dep8
from imageci.definitions.limits import LimitPolicy, parse_assignments
from imageci.definitions.quarantine import quarantine_for_suite
from imageci.definitions.structure import load_structure
from imageci.definitions.suite import Suite, load_suite
from imageci.engine.runner import Engine, RunReport, TestResult
from imageci.engine.waivers import WaiverFn
from imageci.errors import UsageError
from imageci.exitcodes import ExitCode
from imageci.policy.flake import expired_warnings, policy_for
from imageci.reports.junit import write_junit
from imageci.reports.reproducer import RunSpec, write_reproducer
from imageci.reports.tap import write_tap
from imageci.store.models import Attempt, Version
from imageci.testbeds.registry import make_backend

COLOURS = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "flaky": "yellow"}


@dataclass
class TestOptions:
    __test__ = False
    ref: str
    suite: Path | None
    tests: list[str] | None
    testbeds: list[str]  # empty: the suite's default testbeds, else sandbox
    jobs: int | None
    retries: int
    rerun_all: bool
    junit: Path | None
    tap: Path | None
    fresh: str | None = None  # "test" | "suite"; default: the suite's choice
    dep8: list[Path] = field(default_factory=list)  # source trees whose debian/tests to run
    dep8_packages: list[str] = field(default_factory=list)  # source packages fetched with apt-get source
    quarantine: Path | None = None  # default: the suite's quarantine.yaml
    structure: list[Path] = field(default_factory=list)  # container-structure-test files
    testinfra: list[Path] = field(default_factory=list)  # pytest-testinfra modules
    limits: list[str] = field(default_factory=list)  # --limit KEY=VALUE for every test of the run


def _log_text(ctx: Context, result: TestResult) -> str:
    for a in reversed(result.attempts):
        if a.log_digest and ctx.store.has(a.log_digest):
            return ctx.store.path(a.log_digest).read_text(encoding="utf-8", errors="replace")
    return ""


def _show(what: str, result: TestResult, attempt: Attempt | None) -> None:
    assert attempt is not None
    colour = COLOURS.get(attempt.verdict, "white")
    extra = " (cached: passed before for these bytes)" if what == "cached" else (
        f" — {escape(attempt.reason)}" if attempt.reason else "")
    secs = (attempt.ended_at - attempt.started_at).total_seconds()
    tries = f" try {attempt.attempt}" if attempt.attempt > 1 else ""
    bed = escape(f"[{result.testbed}]")
    console.print(f"  [{colour}]{attempt.verdict:5}[/] {escape(result.test_id)} {bed}{tries} "
                  f"{'' if what == 'cached' else f'{secs:.2f}s'}{extra}", highlight=False)


def write_reports(ctx: Context, report: RunReport, junit: Path | None, tap: Path | None) -> None:
    if junit:
        write_junit(report, junit, lambda r: _log_text(ctx, r))
    if tap:
        write_tap(report, tap)


def flake_policy(ctx: Context, version: Version, suite: Suite | None, checks: Sequence[Check],
                 override: Path | None, *, warn: bool = True) -> WaiverFn | None:
    """The waivers for this image's tests: its quarantine file and the suite's grace period."""
    quarantine = quarantine_for_suite(suite.path if suite else None, override)
    if warn:
        for line in expired_warnings(quarantine):
            err_console.print(f"[yellow]warning[/]: {escape(line)}", highlight=False)
    return policy_for(ctx.catalog, version.product.name, [c.id for c in checks], quarantine, arch=version.architecture,
                      grace=suite.grace if suite else None)


def run_tests(ctx: Context, opts: TestOptions) -> ExitCode:
    override = parse_assignments(opts.limits)  # bad input fails before anything runs
    version = ctx.catalog.resolve(opts.ref)
    checks: list[Check] = []
    suite_testbeds: tuple[str, ...] = ()
    fresh = "test"
    config = image_config(version.product.name, version.digest)
    extra = bool(opts.dep8 or opts.dep8_packages or opts.structure or opts.testinfra)
    suite_dir: Path | None = None
    suite: Suite | None = None
    if not extra or opts.suite is not None:  # --dep8 or --structure alone runs only those
        suite_dir = ctx.suite_dir_for(version, opts.suite)
        suite = load_suite(suite_dir)
        for line in suite.warnings:
            err_console.print(f"[yellow]warning[/]: {escape(line)}", highlight=False)
        checks += checks_of(suite, None if extra else opts.tests, config)
        suite_testbeds, fresh = suite.testbeds, suite.fresh
    for path in opts.structure:
        checks += structure_checks(load_structure(path), config)
    for path in opts.testinfra:
        checks += checks_from_testinfra(path)
    fetched = [fetch_source(p, ctx.settings.home / "sources") for p in opts.dep8_packages]
    trees = list(opts.dep8) + fetched
    for tree in trees:
        checks += dep8_checks(load_dep8(tree), DependencyCache(ctx.settings.home / "cache" / "test-deps"))
    if extra and opts.tests:
        by_id = {c.id: c for c in checks}
        unknown = [t for t in opts.tests if t not in by_id]
        if unknown:
            raise UsageError(f"no such test: {', '.join(unknown)}; available: {', '.join(by_id)}")
        checks = [by_id[t] for t in opts.tests]
    limit_policy = suite.limit_policy(override) if suite else LimitPolicy(override=override)
    testbeds = opts.testbeds or list(suite_testbeds) or ["sandbox"]  # command line, else the suite's, else sandbox
    backends = {name: make_backend(name, ctx.settings) for name in dict.fromkeys(testbeds)}
    jobs = opts.jobs or ctx.settings.jobs
    waiver = flake_policy(ctx, version, suite, checks, opts.quarantine)
    engine = Engine(ctx.catalog, ctx.store, backends, jobs=jobs, on_event=_show, fresh=opts.fresh or fresh,
                    waiver=waiver, owner=str(ctx.owner.lock_path), limits=limit_policy)
    console.print(f"testing {version.product.name}@{version.serial} (sha256:{version.digest[:12]}): "
                  f"{len(checks)} test(s) × {', '.join(backends)}")
    report = engine.run(version, checks, list(backends), retries=opts.retries, rerun_all=opts.rerun_all)
    write_reports(ctx, report, opts.junit, opts.tap)
    reproducer = write_reproducer(ctx.settings.runs_dir / str(report.run_id), RunSpec(
        report.run_id, f"{version.product.name}@{version.serial}", version.digest, suite_dir,
        [c.id for c in checks] if opts.tests else None, list(backends), opts.retries, jobs, opts.fresh,
        list(opts.dep8), fetched, opts.quarantine, list(opts.structure), list(opts.testinfra), list(opts.limits)))
    counts = {k: v for k, v in report.counts().items() if v}
    flaky = [r for r in report.results if r.verdict == "flaky"]
    for r in flaky:
        tries = ", ".join(f"#{a.attempt} {a.verdict}" for a in r.attempts)
        waived = f" — {escape(r.waived)}" if r.waived else ""
        console.print(f"[yellow]flaky[/] {escape(r.test_id)} {escape(f'[{r.testbed}]')}: {tries}{waived}",
                      highlight=False)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no tests"
    if report.interrupted:
        console.print("[yellow]interrupted[/]: running tests were stopped, their testbeds removed; "
                      "finished attempts are recorded")
    console.print(f"run {report.run_id}: {summary} → exit {int(report.exit_code)}; re-run it: {reproducer}",
                  highlight=False)
    return report.exit_code
