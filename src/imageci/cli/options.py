"""The arguments and options the test-running commands share (run, test, pipeline, …)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DefArg = Annotated[Path, typer.Argument(help="image definition (image.yaml)")]
RefArg = Annotated[str, typer.Argument(help="NAME[:CHANNEL], NAME@VERSION or sha256:<digest>")]
SuiteOpt = Annotated[Path | None, typer.Option("--suite", help="suite directory (default: the definition's)")]
TestbedOpt = Annotated[list[str] | None, typer.Option("--testbed", help="testbed to run on (repeatable)")]
JobsOpt = Annotated[int | None, typer.Option("-j", "--jobs", min=1, help="tests in parallel (default: cores)")]
RetriesOpt = Annotated[int, typer.Option("--retries", min=0, help="re-run tests that never passed, N times")]
RerunOpt = Annotated[bool, typer.Option("--rerun-all", help="re-run checks that already passed for these bytes")]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="write JUnit XML here")]
TapOpt = Annotated[Path | None, typer.Option("--tap", help="write TAP 13 here")]
Dep8Opt = Annotated[list[Path] | None, typer.Option("--dep8", help="a source tree whose DEP-8 tests "
                                                   "(debian/tests/control) to run; repeatable")]
Dep8PkgOpt = Annotated[list[str] | None, typer.Option("--dep8-package", help="a Debian source package whose "
                                                      "DEP-8 tests to run (apt-get source); repeatable")]
InvestigateOpt = Annotated[bool | None, typer.Option("--investigate/--no-investigate", help="bisect each regression "
                                                   "(imageci bisect; default: the suite's `investigate`)")]
InvestigateBudgetOpt = Annotated[int, typer.Option("--investigate-budget", min=1, max=10000, help="test runs the "
                                                   "run's bisections may take together")]
ConsumersOpt = Annotated[bool, typer.Option("--consumers/--no-consumers", help="also run the image's consumers' "
                                             "suites (imageci consumers list)")]
QuarantineOpt = Annotated[Path | None, typer.Option("--quarantine", help="quarantine file (default: the suite's "
                                                  "quarantine.yaml)")]
StructureOpt = Annotated[list[Path] | None, typer.Option("--structure", help="a container-structure-test YAML file "
                                                        "(repeatable)")]
TestinfraOpt = Annotated[list[Path] | None, typer.Option("--testinfra", help="a pytest-testinfra module "
                                                        "(repeatable)")]
LimitOpt = Annotated[list[str] | None, typer.Option("--limit", metavar="KEY=VALUE", help="a limit for every test "
                                                    "of this run: memory, pids, disk, output, log (repeatable; "
                                                    "e.g. --limit memory=4G)")]
ExecutorOpt = Annotated[str | None, typer.Option("--executor", help="'local': run the tests here; 'celery': as "
                                                 "jobs on workers (`imageci worker`) that record through the "
                                                 "server whose home this is (default: $IMAGECI_EXECUTOR, else "
                                                 "local)")]
FreshOpt = Annotated[str | None, typer.Option("--fresh", help="'test': a new testbed per test; 'suite': reuse "
                                              "one between non-destructive tests (default: the suite's choice)")]
HoldOpt = Annotated[str | None, typer.Option("--hold-on-failure", metavar="[=DURATION]", help="keep each failing "
                                             "test's testbed for a person (default 1h, at most 24h; "
                                             "--hold-on-failure=30m) and print the command that enters it "
                                             "(`imageci attach ID`); `imageci held` lists them")]
