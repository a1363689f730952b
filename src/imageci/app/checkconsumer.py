"""A consumer's pre-deploy check (``imageci check-consumer REF PROJECT_DIR``): from the consumer's own
CI, against any version (``NAME:stable``, the next ``NAME:testing``), on this home or through a server.

First, without running anything, the runtimes the project declares (``.python-version``,
``runtime.txt``, ``engines.node``, ``.tool-versions``) are compared with the version's BOM; then, when
asked, its suite runs in a fresh testbed of the version (fetched by digest from the server), as a
registered consumer's would. The run is recorded in this home only: a check is not evidence for the
image's gate (register the project with ``imageci consumers add`` for that)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from imageci.app import access, inventory, mirroring
from imageci.app.access import LOCAL
from imageci.app.consumers import copy_dir
from imageci.app.inventory import BomArgs, bom_op
from imageci.app.operations import Asks
from imageci.app.planning import TestPlan, TestRequest
from imageci.app.session import Session
from imageci.app.testing import AttemptFn, PlanFn, RunOutcome, execute
from imageci.app.versions import config_of, gate_of
from imageci.checks.consumer import ConsumerCheck, ConsumerSpec
from imageci.definitions.limits import LimitPolicy
from imageci.definitions.runtimes import declared_runtimes
from imageci.errors import UsageError
from imageci.store.snapshots import pack_tree, unpack_tree
from imageci.supply.packages import Bom
from imageci.supply.runtimes import runtime_of, unmet


class CheckRequest(BaseModel):
    ref: str
    project: Path
    command: str | None = None
    setup: str | None = None
    wheelhouse: Path | None = None
    testbeds: list[str] = Field(default_factory=list)
    timeout: int = Field(default=600, ge=1)
    run_anyway: bool = False
    junit: Path | None = None


class RuntimeReport(BaseModel):
    image: str  # NAME@SERIAL
    digest: str  # sha256:…
    summary: str
    met: list[str] = []
    unmet: list[str] = []  # "FILE:LINE wants python 3.11; the image has python 3.13.5 (python3 3.13.5-2)"
    ignored: list[str] = []  # declarations imageci cannot check


class CheckOutcome(BaseModel):
    runtimes: RuntimeReport
    exit_code: int
    verdict: str | None = None  # the suite's, when it ran
    run: int | None = None  # the local run that recorded it


BomSource = Asks  # a server that has the version's BOM

def _project(request: CheckRequest) -> Path:
    if not request.project.is_dir():
        raise UsageError(f"{request.project}: no such directory (the project to check)")
    return request.project


def check_runtimes(session: Session, request: CheckRequest, server: BomSource | None) -> RuntimeReport:
    """The project's declared runtimes against the version's BOM (read on the server when given)."""
    declared = declared_runtimes(_project(request))
    if server is None:
        info = access.resolve(session.reader, LOCAL, request.ref)
        _subject, bom = inventory.bom(session, request.ref)
        image, digest = info.label, f"sha256:{info.digest}"
    else:
        doc = server.call(bom_op, BomArgs(ref=request.ref))
        image, digest = str(doc.pop("image")), str(doc.pop("digest"))
        doc.pop("architecture", None)
        bom = Bom.model_validate(doc)
    missing = unmet(declared.constraints, bom)
    failed = {id(u.constraint) for u in missing}
    met = []
    for c in declared.constraints:
        if id(c) in failed:
            continue
        found = runtime_of(bom, c.tool)
        assert found is not None
        met.append(f"{c.where} wants {c.describe()}; the image has {c.tool} {found.version} "
                   f"({found.package.name} {found.package.version})")
    if not declared.constraints:
        summary = "the project declares no runtime imageci checks"
    elif missing:
        summary = f"{len(missing)} of {len(declared.constraints)} declared runtime(s) not met"
    else:
        summary = f"every declared runtime met ({len(declared.constraints)})"
    return RuntimeReport(image=image, digest=digest, summary=summary, met=met, unmet=[u.describe() for u in missing],
                         ignored=declared.ignored)


def _name(project: Path) -> str:
    name = re.sub(r"[^a-z0-9.-]+", "-", project.resolve().name.lower()).strip("-.") or "project"
    return name[:63]


def run_check(session: Session, request: CheckRequest, server: mirroring.Origin | None, *,
              on_plan: PlanFn | None = None, on_event: AttemptFn | None = None) -> RunOutcome:
    """The project's suite, in a fresh testbed of the version (fetched from ``server`` when given)."""
    if request.command is None:
        raise UsageError("nothing to run: give --command")
    ref = request.ref if server is None else mirroring.fetch(session, server, request.ref)[1]
    version = session.catalog.resolve(ref)
    session.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=session.settings.tmp_dir, prefix="check-consumer-") as tmp:
        root = Path(tmp) / "snapshot"
        copy_dir(_project(request), root / "suite", "the project")
        if request.wheelhouse is not None:
            copy_dir(request.wheelhouse, root / "wheelhouse", "--wheelhouse")
        snapshot = pack_tree(root, session.store).digest
    tree = unpack_tree(session.store, snapshot, session.settings.home / "consumers" / "snapshots")
    check = ConsumerCheck(ConsumerSpec(name=_name(request.project), tree=tree, command=request.command,
                                       setup=request.setup, timeout=request.timeout, snapshot=snapshot))
    g = gate_of(version)
    testbeds = request.testbeds or (list(g.testbeds) if g is not None else ["sandbox"])
    test_request = TestRequest(ref=ref, tests=[check.id], testbeds=testbeds, junit=request.junit, consumers=False)
    plan = TestPlan(request=test_request, version=version, checks=[check], testbeds=testbeds, fresh="test", jobs=1,
                    limits=LimitPolicy(), waiver=None, config=config_of(session, version))
    if on_plan is not None:
        on_plan(plan)
    return execute(session, plan, on_event)
