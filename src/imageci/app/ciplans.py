"""CI systems as fan-out: a version's tests as jobs of another CI system.

``ci_plan`` is the plan `imageci test` would run (the version's own suite ×
its testbeds), one entry per test × testbed. ``gitlab_pipeline`` writes it as
a GitLab CI child pipeline — one job per entry, each running ``imageci run``
against the server (the runner fetches the image by digest, runs the test on
its own testbed and records the attempt there) and uploading its JUnit
report; ``github_matrix`` as a GitHub Actions matrix (``include`` entries,
sharded when there are more than a matrix takes).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml
from pydantic import BaseModel, Field

from imageci.app import access
from imageci.app.access import LOCAL, Principal
from imageci.app.operations import RefArgs, operation
from imageci.app.planning import TestRequest, plan_tests
from imageci.app.session import Session
from imageci.engine.routing import route
from imageci.errors import UsageError
from imageci.testbeds.registry import check_name

GITHUB_MATRIX_MAX = 256  # GitHub Actions runs at most this many jobs from one matrix
EXIT_NO_TESTS = 4  # `imageci run`'s exit code when every test was skipped: a warning, not a failure


class CiEntry(BaseModel):
    test: str
    testbed: str
    needs: list[str]  # capability words the test needs
    requires: list[str]  # what a runner must offer: the testbed, arch:…, gpu/kvm (as a worker's routing)


class CiPlan(BaseModel):
    image: str  # NAME@SERIAL: every job tests this version
    digest: str
    architecture: str
    entries: list[CiEntry]


def ci_plan(session: Session, ref: str, testbeds: list[str] | None = None, *, by: Principal = LOCAL) -> CiPlan:
    """The version's suite × testbeds (``testbeds``, else the suite's) as CI jobs would run them."""
    for tb in testbeds or []:
        check_name(tb)
    version = access.resolve(session.reader, by, ref)
    plan = plan_tests(session, TestRequest(ref=version.label, testbeds=testbeds or [], executor="local"))
    arch = plan.version.architecture
    entries = [CiEntry(test=c.id, testbed=tb, needs=sorted(c.needs),
                       requires=sorted(route(tb, arch, c.needs).words))
               for c in plan.checks for tb in plan.testbeds]
    return CiPlan(image=version.label, digest=f"sha256:{version.digest}", architecture=arch, entries=entries)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "test"


def _run_line(plan: CiPlan, tests: list[str], testbed: str, junit: str) -> str:
    return " ".join(["imageci", "run", '"$IMAGECI_REF"', "--testbed", shlex.quote(testbed), "--junit",
                     shlex.quote(junit), "--", *(shlex.quote(t) for t in tests)])


def gitlab_pipeline(plan: CiPlan, *, server: str | None = None, tags: bool = False) -> str:
    """A GitLab CI child pipeline: one job per test × testbed. ``server``: written as IMAGECI_SERVER
    (else the runners' CI/CD variable); ``tags``: each job asks for runners tagged with what it requires."""
    if not plan.entries:
        raise UsageError(f"{plan.image} has no tests to run")
    variables: dict[str, str] = {"IMAGECI_REF": plan.image}
    if server:
        variables["IMAGECI_SERVER"] = server
    doc: dict[str, Any] = {"stages": ["imageci"], "variables": variables}
    used: set[str] = set()
    for e in plan.entries:
        name = f"{e.test} [{e.testbed}]"
        junit = f"imageci-junit/{_slug(e.test)}-{_slug(e.testbed)}.xml"
        n = 2
        while junit in used:
            junit = f"imageci-junit/{_slug(e.test)}-{_slug(e.testbed)}-{n}.xml"
            n += 1
        used.add(junit)
        job: dict[str, Any] = {
            "stage": "imageci", "interruptible": True,
            "script": [_run_line(plan, [e.test], e.testbed, junit)],
            "artifacts": {"when": "always", "paths": [junit], "reports": {"junit": junit}},
            "allow_failure": {"exit_codes": [EXIT_NO_TESTS]},
        }
        if tags:
            job["tags"] = [f"imageci-{w.replace(':', '-')}" for w in e.requires]
        doc[name] = job
    head = (f"# imageci ci gitlab {plan.image} ({plan.digest}, {plan.architecture}): {len(plan.entries)} job(s),\n"
            "# one per test x testbed. Each runs `imageci run` on its runner: the image is fetched from the\n"
            "# server by digest, the test runs there and its attempt is recorded on the server. Runners need\n"
            "# imageci on PATH and the CI/CD variables IMAGECI_SERVER and IMAGECI_TOKEN (scope test).\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=1000, allow_unicode=True)


def github_matrix(plan: CiPlan, max_jobs: int = GITHUB_MATRIX_MAX) -> dict[str, Any]:
    """``{"include": [...]}`` for ``strategy.matrix: ${{ fromJSON(…) }}``: one entry per test × testbed,
    or, past ``max_jobs``, the tests of a testbed shared out over shards (each entry's ``run`` is the
    command line for its tests)."""
    if not plan.entries:
        raise UsageError(f"{plan.image} has no tests to run")
    if not 1 <= max_jobs <= GITHUB_MATRIX_MAX:
        raise UsageError(f"--max-jobs must be 1 to {GITHUB_MATRIX_MAX} (got {max_jobs})")
    by_bed: dict[str, list[CiEntry]] = {}
    for e in plan.entries:
        by_bed.setdefault(e.testbed, []).append(e)
    if len(plan.entries) <= max_jobs:
        groups = [(tb, [e]) for tb, es in by_bed.items() for e in es]
    else:
        if len(by_bed) > max_jobs:
            raise UsageError(f"{len(by_bed)} testbeds do not fit in {max_jobs} jobs")
        groups = []
        per_bed = max(1, max_jobs // len(by_bed))
        for tb, es in by_bed.items():
            shards = min(per_bed, len(es))
            groups += [(tb, es[i::shards]) for i in range(shards)]
    include = []
    for n, (tb, es) in enumerate(groups, 1):
        tests = [e.test for e in es]
        name = f"{tests[0]} [{tb}]" if len(tests) == 1 else f"{tb} shard {n} ({len(tests)} tests)"
        junit = f"imageci-junit/{n:03d}-{_slug(tb)}.xml"
        include.append({"name": name, "image": plan.image, "testbed": tb, "tests": tests, "junit": junit,
                        "requires": sorted({w for e in es for w in e.requires}),
                        "run": _run_line(plan, tests, tb, junit).replace('"$IMAGECI_REF"', shlex.quote(plan.image))})
    return {"include": include}


class PlanArgs(RefArgs):
    testbed: list[str] | None = Field(default=None, max_length=64, description="these testbeds, not the suite's")


@operation("GET", "/images/{ref}/plan", request=PlanArgs, answer=CiPlan, tag="images", name="plan")
def plan_op(session: Session, req: PlanArgs, by: Principal) -> CiPlan:
    """The version's suite × testbeds as another CI system's jobs would run them (`imageci ci`)."""
    return ci_plan(session, req.ref, req.testbed, by=by)
