"""What a test run is asked for (the options `run`, `test` and `pipeline` share) and the rules read from it
alone, in a module of their own: the fast answer of ``app.passes`` reads them without the ORM that planning
loads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from imageci.definitions.suite import Suite

Fresh = Literal["test", "suite"]
Executor = Literal["local", "celery"]


class TestRequest(BaseModel):
    """What to test: the options ``run``, ``test`` and ``pipeline`` share."""

    __test__ = False
    model_config = ConfigDict(extra="forbid")
    ref: str = Field(description="NAME[:CHANNEL], NAME@VERSION or sha256:<digest>")
    tests: list[str] | None = Field(default=None, description="only these tests (None: the whole suite)")
    suite: Path | None = Field(default=None, description="suite directory instead of the version's own")
    testbeds: list[str] = Field(default_factory=list, description="empty: the suite's testbeds, else sandbox")
    jobs: int | None = Field(default=None, ge=1, description="tests in parallel (None: the settings' jobs)")
    retries: int = Field(default=0, ge=0)
    rerun_all: bool = False
    fresh: Fresh | None = Field(default=None, description="None: the suite's choice")
    dep8: list[Path] = Field(default_factory=list, description="source trees whose debian/tests to run")
    dep8_packages: list[str] = Field(default_factory=list, description="source packages (apt-get source)")
    quarantine: Path | None = Field(default=None, description="None: the suite's quarantine.yaml")
    structure: list[Path] = Field(default_factory=list, description="container-structure-test files")
    testinfra: list[Path] = Field(default_factory=list, description="pytest-testinfra modules")
    limits: list[str] = Field(default_factory=list, description="KEY=VALUE limits for every test of the run")
    junit: Path | None = None
    tap: Path | None = None
    executor: Executor | None = Field(default=None, description="None: the settings' (IMAGECI_EXECUTOR)")
    consumers: bool = Field(default=True, description="with the whole suite, run the product's consumers' suites "
                                                      "too (name one with tests: consumer:NAME)")
    investigate: bool | None = Field(default=None, description="bisect each regression (None: the suite's choice)")
    investigate_budget: int = Field(default=60, ge=1, le=10000, description="test runs all of a run's bisections "
                                                                             "may take together")
    hold: timedelta | None = Field(default=None, description="keep each failing test's testbed this long for a "
                                   "person to enter (`imageci attach`); None: removed at once")

    @property
    def extra(self) -> bool:
        """Tests named outside the suite: alone (no ``suite``), only those run."""
        return bool(self.dep8 or self.dep8_packages or self.structure or self.testinfra)


def testbeds_for(request: TestRequest, suite: Suite | None) -> list[str]:
    """The testbeds a run uses: those asked for, else the suite's, else the sandbox."""
    return list(dict.fromkeys(request.testbeds or (suite.testbeds if suite else ()) or ["sandbox"]))


def executor_for(request: TestRequest, configured: str) -> Executor:
    """Where the run's tests run: the one asked for, else the settings' (``IMAGECI_EXECUTOR``)."""
    return request.executor or ("celery" if configured == "celery" else "local")
