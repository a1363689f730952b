"""The ``imageci`` command: parse, call the application layer (``imageci.app``), print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageci import __version__
from imageci.cli import (
    cisystems,
    compliance,
    consumers,
    fleet,
    inventory,
    quarantine,
    repro,
    retention,
    serving,
    upkeep,
    vulns,
)
from imageci.cli.context import COLOURS, console, handle_errors, print_json, show_warnings

# Commands import what they use when they run: `imageci --version` and the queries start fast.
if TYPE_CHECKING:
    from imageci.app.planning import Fresh, TestRequest
    from imageci.app.session import Session
    from imageci.build.service import BuildResult
    from imageci.client.remote import ApiClient

app = typer.Typer(help="Continuous integration for OS and container images.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)

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


def _version_cb(value: bool) -> None:
    if value:
        console.print(f"imageci {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version_cb, is_eager=True)] = False,
         server: Annotated[str | None, typer.Option("--server", metavar="URL", help="an imageci server to "
                                                    "ask (default: $IMAGECI_SERVER, then `imageci login`'s)")]
         = None) -> None:
    """imageci: build → testing → fresh-sandbox tests → recorded verdicts → gated promotion."""
    from imageci.cli import sources

    sources.server_option = server
    show_warnings()


def _build(session: Session, definition: Path, force: bool, only: set[str] | None = None) -> list[BuildResult]:
    from imageci.app import building

    with console.status(f"building {definition}…") as status:
        what = definition.name

        def on_line(line: str) -> None:
            nonlocal what
            if line.startswith("== "):  # the next architecture's product
                what = line[3:].split(":")[0]
            if line.startswith(("I:", "W:", "E:", "== ")):
                status.update(f"building {what}: {line[:100]}")
        results = building.build(session, definition, force=force, on_line=on_line, only=only)
    for result in results:
        _show_build(result)
    return results


def _show_build(result: BuildResult) -> None:
    from imageci.store.models import label

    v = result.version
    if result.skipped:
        console.print(f"[cyan]unchanged inputs[/] (input hash {result.input_hash[:12]}): "
                      f"{label(v)} already built, skipping build (--force rebuilds)")
    elif result.identical:
        console.print(f"[cyan]rebuilt bit-identical[/] to {label(v)} (sha256:{v.digest[:12]})")
    else:
        src = " from the build cache" if result.from_cache else f" in {result.seconds:.1f}s"
        console.print(f"[green]built[/] {label(v)}{src}, sha256:{v.digest[:12]}, published to [bold]testing[/]")


@app.command()
@handle_errors
def build(definition: DefArg,
          force: Annotated[bool, typer.Option("--force", help="rebuild even if the inputs did not change")] = False,
          publish: Annotated[bool, typer.Option("--publish", help="then publish it to the server's testing "
                                                "channel (--server, IMAGECI_SERVER or `imageci login`)")]
          = False,
          arch: Annotated[list[str] | None, typer.Option("--arch", metavar="ARCH", help="only this one of the "
                                                         "definition's architectures (repeatable)")] = None) -> None:
    """Build an image from its definition and publish it to the testing channel (a definition listing
    `architectures` makes one product per architecture, NAME-ARCH)."""
    from imageci.app.session import Session
    from imageci.store.models import label

    session = Session.open()
    if publish:
        _server(session)  # before building: no server, no build
    results = _build(session, definition, force, set(arch) if arch else None)
    if publish:
        for result in results:
            _push(session, label(result.version))


def _server(session: Session) -> ApiClient:
    from imageci.cli.sources import remote_client
    from imageci.errors import UsageError

    client = remote_client(session.settings)
    if client is None:
        raise UsageError("no server to publish to: --server URL, IMAGECI_SERVER or `imageci login URL`")
    return client


def _push(session: Session, ref: str) -> None:
    from imageci.app import publishing

    client = _server(session)
    with console.status(f"publishing {ref} to {client.remote.url}…"):
        done = publishing.push(session, ref, client)
    if done.created:
        console.print(f"[green]published[/] {done.image} ({done.digest[:19]}) to {client.remote.url}, namespace "
                      f"{done.namespace}, channel [bold]testing[/]", highlight=False)
    else:
        console.print(f"already published: {done.image} ({done.digest[:19]}) on {client.remote.url} "
                      f"({done.state})", highlight=False)


@app.command()
@handle_errors
def publish(ref: RefArg) -> None:
    """Publish a version of this home to a server (--server, IMAGECI_SERVER or `imageci login`): its
    artifacts are uploaded (only those the server lacks) and checked, then it appears on the server's
    testing channel in one step. Publishing the same bytes again changes nothing."""
    from imageci.app.session import Session

    _push(Session.open(), ref)


@app.command("import")
@handle_errors
def import_(name: Annotated[str, typer.Argument(help="the product to import it as (image name)")],
            source: Annotated[str, typer.Argument(
                metavar="SOURCE", help="a rootfs tarball (.tar, .tar.gz, .tar.xz, .tar.zst), a qcow2 disk image, "
                "oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE or docker://REGISTRY/NAME:TAG")],
            suite: Annotated[Path | None, typer.Option("--suite", help="the test suite it carries (a run can "
                                                        "also name one with --suite)")] = None,
            arch: Annotated[str | None, typer.Option("--arch", help="the architecture to take from a "
                                                     "multi-platform image; a tarball's (default: this host's)")]
            = None,
            tls_verify: Annotated[bool, typer.Option("--tls-verify/--no-tls-verify", help="docker://: check the "
                                                     "registry's certificate (--no-tls-verify also allows plain "
                                                     "HTTP)")] = True,
            publish: Annotated[bool, typer.Option("--publish", help="then publish it to the server's testing "
                                                  "channel (--server, IMAGECI_SERVER or `imageci login`)")]
            = False) -> None:
    """Import an image built elsewhere as a new version on the testing channel: a root filesystem
    tarball, a qcow2 disk image (booted through its firmware on qemu), or an OCI image (layers
    flattened, whiteouts honoured; its env, entrypoint, cmd, user and labels kept for structure tests).
    Importing the same bytes again changes nothing."""
    from imageci.app import importing
    from imageci.app.session import Session
    from imageci.store.models import label

    session = Session.open()
    if publish:
        _server(session)  # before importing: no server, no import
    with console.status(f"importing {source}…") as status:
        result = importing.import_(session, name, source, architecture=arch, suite=suite, tls_verify=tls_verify,
                                   on_step=lambda step: status.update(f"importing {source}: {step}"))
    v = result.version
    layers = f", {result.layers} layer(s) flattened" if result.layers else ""
    if result.identical:
        console.print(f"[cyan]already imported[/]: {label(v)} has these bytes (sha256:{v.digest[:12]}, {v.state})",
                      highlight=False)
    else:
        console.print(f"[green]imported[/] {label(v)} from {result.source}{layers} in {result.seconds:.1f}s, "
                      f"sha256:{v.digest[:12]}, {v.architecture}, published to [bold]testing[/]", highlight=False)
    if publish:
        _push(session, label(v))


@app.command()
@handle_errors
def push(ref: RefArg,
         destination: Annotated[str, typer.Argument(
             metavar="DESTINATION", help="docker://REGISTRY/REPO[:TAG], oci:DIR[:TAG] or oci-archive:FILE[:TAG] "
             "(TAG: the version's serial when left out)")],
         tls_verify: Annotated[bool, typer.Option("--tls-verify/--no-tls-verify", help="docker://: check the "
                                                  "registry's certificate (--no-tls-verify also allows plain "
                                                  "HTTP)")] = True,
         authfile: Annotated[Path | None, typer.Option("--authfile", help="the registry credentials "
                                                       "(containers-auth.json; default: skopeo's, or "
                                                       "REGISTRY_AUTH_FILE)")] = None,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Push a version to an OCI registry or layout through skopeo, byte for byte: its one layer is the
    tested rootfs (the same digest when pulled), with OCI annotations saying what it is. Recorded in
    the version's events once the destination accepted it; a refusal exits 10 and records nothing."""
    from imageci.app import pushing
    from imageci.app.session import Session

    with console.status(f"pushing {ref} to {destination}…"):
        done = pushing.push(Session.open(), ref, destination, tls_verify=tls_verify, authfile=authfile)
    if as_json:
        print_json(done)
        return
    console.print(f"[green]pushed[/] {done.image} to {done.destination}: manifest {done.manifest_digest}, "
                  f"layer {done.layer_digest[:19]} (the tested rootfs)", highlight=False)


@app.command()
@handle_errors
def images(name: Annotated[str | None, typer.Argument(help="only this product")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List products, versions, their states and channels."""
    from imageci.app.queries import ImagesArgs, images_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(images_op, ImagesArgs(name=name))
    if as_json:
        print_json(rows)
        return
    write_columns(("name", "version", "state", "channels", "digest", "size", "created", "lxd feed"),
                  ((r.name, r.version, r.state, ",".join(r.channels) or "-", r.digest[:19], f"{r.size / 1e6:.1f} MB",
                    r.created, r.lxd_feed) for r in rows))


def _fresh(value: str | None) -> Fresh | None:
    from imageci.errors import UsageError

    if value == "test":
        return "test"
    if value == "suite":
        return "suite"
    if value is None:
        return None
    raise UsageError(f"--fresh must be 'test' or 'suite' (got {value!r})")


def _request(ref: str, tests: list[str] | None, suite: Path | None, testbed: list[str] | None, jobs: int | None,
             retries: int, rerun_all: bool, junit: Path | None, tap: Path | None, fresh: str | None,
             dep8: list[Path] | None, dep8_package: list[str] | None, quarantine: Path | None,
             structure: list[Path] | None, testinfra: list[Path] | None, limit: list[str] | None,
             executor: str | None = None, consumers: bool = True) -> TestRequest:
    from imageci.app.planning import TestRequest
    from imageci.errors import UsageError

    if executor not in (None, "local", "celery"):
        raise UsageError(f"--executor must be 'local' or 'celery' (got {executor!r})")
    return TestRequest(ref=ref, tests=tests, suite=suite, testbeds=testbed or [], jobs=jobs, retries=retries,
                       rerun_all=rerun_all, junit=junit, tap=tap, fresh=_fresh(fresh), dep8=dep8 or [],
                       dep8_packages=dep8_package or [], quarantine=quarantine, structure=structure or [],
                       testinfra=testinfra or [], limits=limit or [],
                       executor=executor, consumers=consumers)  # type: ignore[arg-type]


def _run(request: TestRequest) -> None:
    from imageci.app.pipeline import test_via
    from imageci.app.session import Session
    from imageci.app.testing import run_tests
    from imageci.cli.sources import remote_client
    from imageci.cli.testing import Steps, show_event, show_outcome, show_plan, show_status

    session = Session.open()
    client = remote_client(session.settings)
    if client is None:
        outcome = run_tests(session, request, on_plan=show_plan, on_event=show_event, on_status=show_status)
        show_outcome(outcome)
        raise typer.Exit(int(outcome.exit_code))
    with Steps() as steps:
        outcome, recorded, image = test_via(session, client, client.remote.url, request, steps.hooks())
    show_outcome(outcome)
    console.print(f"recorded on {client.remote.url}: run {recorded} of {image}", highlight=False)
    raise typer.Exit(int(outcome.exit_code))


@app.command()
@handle_errors
def run(ref: RefArg, tests: Annotated[list[str], typer.Argument(help="test names from the image's suite")],
        suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None, retries: RetriesOpt = 0,
        rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None, fresh: FreshOpt = None,
        dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None, quarantine: QuarantineOpt = None,
        structure: StructureOpt = None, testinfra: TestinfraOpt = None, limit: LimitOpt = None,
        executor: ExecutorOpt = None) -> None:
    """Run one or several tests against an image."""
    _run(_request(ref, tests, suite, testbed, jobs, retries, rerun_all, junit, tap, fresh, dep8, dep8_package,
                  quarantine, structure, testinfra, limit, executor))


@app.command()
@handle_errors
def test(ref: RefArg, suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None,
         retries: RetriesOpt = 0, rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None,
         fresh: FreshOpt = None, dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None,
         quarantine: QuarantineOpt = None, structure: StructureOpt = None, testinfra: TestinfraOpt = None,
         limit: LimitOpt = None, executor: ExecutorOpt = None, consumers: ConsumersOpt = True) -> None:
    """Run the image's whole suite and its consumers' suites (or, with --dep8/--dep8-package/--structure/
    --testinfra alone, only those). A gating consumer that fails on a testing version also runs on the stable
    version, so the gate can tell whether this version broke it."""
    _run(_request(ref, None, suite, testbed, jobs, retries, rerun_all, junit, tap, fresh, dep8, dep8_package,
                  quarantine, structure, testinfra, limit, executor, consumers))


RUN_NOTES = {"aborted": "the imageci process running it died; what it recorded is below",
             "interrupted": "stopped by Ctrl-C/SIGTERM", "running": "still running"}


@app.command()
@handle_errors
def results(ref: RefArg, tests: Annotated[list[str] | None, typer.Argument(help="only these tests")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every recorded attempt for an image: verdict, duration, log path."""
    from imageci.app.queries import ResultsArgs, results_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    res = source().call(results_op, ResultsArgs(ref=ref, test=tests))
    if as_json:
        print_json(res.model_dump(mode="json", include={"image", "digest", "architecture", "runs", "attempts"}))
        return
    arch = f", {res.architecture}" if res.architecture else ""
    console.print(f"{res.image} ({res.state}{arch}) {res.digest[:19]}")
    for run in res.runs:
        if run.status != "finished":
            console.print(f"[yellow]run {run.run} {run.status}[/] ({run.started} → {run.ended or '…'}): "
                          f"{run.attempts} attempt(s) recorded for {run.tests} planned test(s) — "
                          f"{RUN_NOTES.get(run.status, '')}", highlight=False)
    write_columns(("run", "test", "testbed", "try", "verdict", "exit", "seconds", "started", "reason / log"),
                  ((str(a.run), a.test, a.testbed, str(a.attempt), a.verdict,
                    "-" if a.exit_code is None else str(a.exit_code), f"{a.duration:.3f}", a.started,
                    a.reason or a.log or "") for a in res.attempts),
                  colour=lambda column, value: COLOURS.get(value) if column == 4 else None)


@app.command()
@handle_errors
def log(ref: RefArg, test: Annotated[str, typer.Argument(help="the test's id, as `results` shows it")],
        run: Annotated[int | None, typer.Option("--run", min=1, help="of this run (default: the latest)")] = None,
        attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="this attempt of the run")] = None,
        follow: Annotated[bool, typer.Option("--follow", "-f", help="while the test runs on a worker, print "
                                             "its output as it comes, until its attempt is recorded")] = False
        ) -> None:
    """Print the log of a test's latest attempt on an image (or of --run / --attempt)."""
    from imageci.cli.sources import source

    if follow:
        from imageci.cli.follow import follow_log

        if attempt is not None:
            raise typer.BadParameter("--follow follows the attempt running now: it takes no --attempt")
        if follow_log(source(), ref, test, run, sys.stdout.buffer):
            return
    data = source().log(ref, test, run, attempt)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@app.command()
@handle_errors
def promote(ref: RefArg,
            to: Annotated[str, typer.Option("--to", help="target channel")] = "stable",
            force: Annotated[bool, typer.Option("--force", help="promote although the gate does not hold")] = False,
            reason: Annotated[str, typer.Option("--reason", help="why (required with --force; audited)")] = "",
            ) -> None:
    """Promote a version to stable; refused unless its gate holds."""
    from imageci.app.gating import PromoteArgs, PromoteRequest, promote_op
    from imageci.cli.sources import source

    promoted = source().call(promote_op, PromoteArgs(ref=ref, body=PromoteRequest(to=to, force=force,
                                                                                  reason=reason)))
    console.print(f"[green]promoted[/] {promoted.image} to stable" + (" (forced)" if promoted.forced else ""))
    for other in promoted.also:
        console.print(f"[green]promoted[/] {other} to stable with it (the same build, another architecture)")
    for old in promoted.retired:
        console.print(f"retired {old} (inactive)")


@app.command()
@handle_errors
def gate(ref: RefArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Evaluate a version's gate now: each requirement met or not, and why. Exit 0 when it holds,
    5 when it does not (or the image defines no gate)."""
    from imageci.app.gating import gate_op
    from imageci.app.operations import RefArgs
    from imageci.cli.sources import source
    from imageci.exitcodes import ExitCode

    status = source().call(gate_op, RefArgs(ref=ref))
    if as_json:
        print_json(status)
    else:
        console.print(f"{status.image} ({status.state}, {status.architecture}): {status.explanation}",
                      highlight=False, markup=False, soft_wrap=True)
    if not status.holds:
        raise typer.Exit(int(ExitCode.GATE_REFUSED))


@app.command()
@handle_errors
def pipeline(definition: DefArg,
             force_build: Annotated[bool, typer.Option("--force-build", help="rebuild even if unchanged")] = False,
             suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None, retries: RetriesOpt = 0,
             rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None, fresh: FreshOpt = None,
             dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None, quarantine: QuarantineOpt = None,
             structure: StructureOpt = None, testinfra: TestinfraOpt = None, limit: LimitOpt = None,
             consumers: ConsumersOpt = True) -> None:
    """build → publish to testing → test the gate suite (and the consumers' suites) → promote to stable if the
    gate holds."""
    from imageci.app.pipeline import pipeline as run_pipeline
    from imageci.app.session import Session
    from imageci.cli.sources import remote_client
    from imageci.cli.testing import Steps, show_pipeline

    request = _request("", None, suite, testbed, jobs, retries, rerun_all, junit, tap, fresh, dep8, dep8_package,
                       quarantine, structure, testinfra, limit, consumers=consumers)
    session = Session.open()
    client = remote_client(session.settings)
    with Steps(f"building {definition}…", building=definition.name, on_built=_show_build) as steps:
        outcome = run_pipeline(session, definition, request, force_build=force_build, server=client,
                               url=client.remote.url if client else None, hooks=steps.hooks())
    show_pipeline(outcome)
    raise typer.Exit(int(outcome.exit_code))


@app.command()
@handle_errors
def events(ref: RefArg) -> None:
    """The audit trail of a version: every state change, who, when, why."""
    from imageci.app.operations import RefArgs
    from imageci.app.queries import events_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(events_op, RefArgs(ref=ref))
    write_columns(("at", "event", "actor", "reason"),
                  ((e.at.isoformat(timespec="seconds"), e.event, e.actor, e.reason) for e in rows))


@app.command()
@handle_errors
def prune(older_than: Annotated[str, typer.Option("--older-than", help="age, e.g. 3d")] = "3d",
          name: Annotated[str | None, typer.Option("--name", help="only this product")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run")] = False) -> None:
    """Retire testing versions older than a cutoff that never had a passing run."""
    from imageci.app.gating import PruneArgs, PruneRequest, prune_op
    from imageci.cli.sources import source
    from imageci.definitions.durations import duration_arg

    duration_arg(older_than)  # a bad age is refused here, the same with or without a server
    pruned = source().call(prune_op, PruneArgs(body=PruneRequest.model_construct(older_than=older_than, name=name,
                                                                                 dry_run=dry_run)))
    for v in pruned:
        console.print(f"{'would retire' if dry_run else 'retired'} {v.image}", highlight=False)
    console.print(f"{len(pruned)} version(s) {'to prune' if dry_run else 'pruned'}")


@app.command()
@handle_errors
def flaky(name: Annotated[str | None, typer.Argument(help="only this product")] = None,
          since: Annotated[str, typer.Option("--since", help="how far back, e.g. 30d")] = "30d",
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every transient failure: tests that failed and then passed within one run, with the attempt numbers."""
    from imageci.app.queries import FlakyArgs, flaky_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(flaky_op, FlakyArgs(name=name, since=since))
    if as_json:
        print_json(rows)
        return
    write_columns(("image", "run", "test", "testbed", "attempts"),
                  ((r.image, str(r.run), r.test, r.testbed, ", ".join(f"#{a.attempt} {a.verdict}" for a in r.attempts))
                   for r in rows))
    tests = {(r.test, r.testbed) for r in rows}
    console.print(f"{len(rows)} transient failure(s) of {len(tests)} test(s) in the last {since}")


fleet.register(app)
serving.register(app)
cisystems.register(app)
upkeep.register(app)
quarantine.register(app)
consumers.register(app)
retention.register(app)
inventory.register(app)
vulns.register(app)
compliance.register(app)
repro.register(app)

if __name__ == "__main__":
    app()
