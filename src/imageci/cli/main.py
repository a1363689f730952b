"""The ``imageci`` command: thin commands over the layers below."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from imageci import __version__
from imageci.build.caches import verify_caches
from imageci.build.service import build_image
from imageci.cli.context import Context, checks_of, console, err_console, handle_errors, show_warnings
from imageci.cli.testing import TestOptions, flake_policy, run_tests
from imageci.definitions.durations import parse_duration
from imageci.definitions.image import load_definition
from imageci.definitions.suite import load_suite
from imageci.engine.gc import collect_garbage
from imageci.errors import UsageError
from imageci.exitcodes import ExitCode
from imageci.policy.flake import flaky_report
from imageci.policy.gate import evaluate_gate, required_checks
from imageci.policy.promote import promote as do_promote
from imageci.policy.promote import prune as do_prune
from imageci.store.models import State, as_utc, utcnow
from imageci.testbeds.hostcheck import check_host

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
QuarantineOpt = Annotated[Path | None, typer.Option("--quarantine", help="quarantine file (default: the suite's "
                                                  "quarantine.yaml)")]
StructureOpt = Annotated[list[Path] | None, typer.Option("--structure", help="a container-structure-test YAML file "
                                                        "(repeatable)")]
TestinfraOpt = Annotated[list[Path] | None, typer.Option("--testinfra", help="a pytest-testinfra module "
                                                        "(repeatable)")]
LimitOpt = Annotated[list[str] | None, typer.Option("--limit", metavar="KEY=VALUE", help="a limit for every test "
                                                    "of this run: memory, pids, disk, output, log (repeatable; "
                                                    "e.g. --limit memory=4G)")]
FreshOpt = Annotated[str | None, typer.Option("--fresh", help="'test': a new testbed per test; 'suite': reuse "
                                              "one between non-destructive tests (default: the suite's choice)")]


def _version_cb(value: bool) -> None:
    if value:
        console.print(f"imageci {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version_cb, is_eager=True)] = False) -> None:
    """imageci: build → testing → fresh-sandbox tests → recorded verdicts → gated promotion."""
    show_warnings()


def _build(ctx: Context, definition: Path, force: bool) -> tuple[object, int]:
    loaded = load_definition(definition)
    lines: list[str] = []
    with console.status(f"building {loaded.definition.name} with mmdebstrap…") as status:
        def on_line(line: str) -> None:
            lines.append(line)
            if line.startswith(("I:", "W:", "E:")):
                status.update(f"building {loaded.definition.name}: {line[:100]}")
        result = build_image(loaded, ctx.settings, ctx.catalog, ctx.store, force=force, on_line=on_line)
    v = result.version
    if result.skipped:
        console.print(f"[cyan]unchanged inputs[/] (input hash {result.input_hash[:12]}): "
                      f"{v.product.name}@{v.serial} already built, skipping build (--force rebuilds)")
    elif result.identical:
        console.print(f"[cyan]rebuilt bit-identical[/] to {v.product.name}@{v.serial} (sha256:{v.digest[:12]})")
    else:
        src = " from the build cache" if result.from_cache else f" in {result.seconds:.1f}s"
        console.print(f"[green]built[/] {v.product.name}@{v.serial}{src}, sha256:{v.digest[:12]}, "
                      f"published to [bold]testing[/]")
    return result, 0


@app.command()
@handle_errors
def build(definition: DefArg,
          force: Annotated[bool, typer.Option("--force", help="rebuild even if the inputs did not change")] = False,
          ) -> None:
    """Build an image from its definition and publish it to the testing channel."""
    ctx = Context.load()
    _build(ctx, definition, force)


@app.command()
@handle_errors
def images(name: Annotated[str | None, typer.Argument(help="only this product")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List products, versions, their states and channels."""
    ctx = Context.load()
    versions = ctx.catalog.versions(name)
    if name and not versions:
        ctx.catalog.resolve(name)  # raises with close names
    rows = []
    for v in versions:
        channels = [c for c, states in (("testing", {State.TESTING, State.STABLE}), ("stable", {State.STABLE}))
                    if State(v.state) in states]
        rows.append({"name": v.product.name, "version": v.serial, "state": v.state, "channels": channels,
                     "digest": f"sha256:{v.digest}", "created": v.created_at.isoformat(timespec="seconds"),
                     "size": sum(a.size for a in v.artifacts if a.kind == "rootfs")})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("name", "version", "state", "channels", "digest", "size", "created")
    for r in rows:
        table.add_row(r["name"], r["version"], r["state"], ",".join(r["channels"]) or "-",  # type: ignore[arg-type]
                      str(r["digest"])[:19], f"{int(r['size']) / 1e6:.1f} MB", str(r["created"]))  # type: ignore[call-overload]
    console.print(table)


def _fresh(value: str | None) -> str | None:
    if value not in (None, "test", "suite"):
        raise UsageError(f"--fresh must be 'test' or 'suite' (got {value!r})")
    return value


@app.command()
@handle_errors
def run(ref: RefArg, tests: Annotated[list[str], typer.Argument(help="test names from the image's suite")],
        suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None, retries: RetriesOpt = 0,
        rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None, fresh: FreshOpt = None,
        dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None, quarantine: QuarantineOpt = None,
        structure: StructureOpt = None, testinfra: TestinfraOpt = None, limit: LimitOpt = None) -> None:
    """Run one or several tests against an image."""
    ctx = Context.load()
    code = run_tests(ctx, TestOptions(ref, suite, tests, testbed or [], jobs, retries, rerun_all, junit, tap,
                                      _fresh(fresh), dep8 or [], dep8_package or [], quarantine, structure or [],
                                      testinfra or [], limit or []))
    raise typer.Exit(int(code))


@app.command()
@handle_errors
def test(ref: RefArg, suite: SuiteOpt = None, testbed: TestbedOpt = None, jobs: JobsOpt = None,
         retries: RetriesOpt = 0, rerun_all: RerunOpt = False, junit: JunitOpt = None, tap: TapOpt = None,
         fresh: FreshOpt = None, dep8: Dep8Opt = None, dep8_package: Dep8PkgOpt = None,
         quarantine: QuarantineOpt = None, structure: StructureOpt = None, testinfra: TestinfraOpt = None,
         limit: LimitOpt = None) -> None:
    """Run the image's whole suite (or, with --dep8/--dep8-package/--structure/--testinfra alone, only those)."""
    ctx = Context.load()
    code = run_tests(ctx, TestOptions(ref, suite, None, testbed or [], jobs, retries, rerun_all, junit, tap,
                                      _fresh(fresh), dep8 or [], dep8_package or [], quarantine, structure or [],
                                      testinfra or [], limit or []))
    raise typer.Exit(int(code))


@app.command()
@handle_errors
def results(ref: RefArg, tests: Annotated[list[str] | None, typer.Argument(help="only these tests")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every recorded attempt for an image: verdict, duration, log path."""
    ctx = Context.load()
    version = ctx.catalog.resolve(ref)
    attempts = ctx.catalog.attempts(version.digest, tests)
    if tests:
        known = {a.test_id for a in ctx.catalog.attempts(version.digest)}
        unknown = [t for t in tests if t not in known]
        if unknown:
            raise UsageError(f"no results for {', '.join(unknown)} on {version.product.name}@{version.serial}; "
                             f"tests with results: {', '.join(sorted(known)) or 'none'}")
    rows = [{"run": a.run_id, "test": a.test_id, "testbed": a.testbed, "attempt": a.attempt, "verdict": a.verdict,
             "exit_code": a.exit_code, "reason": a.reason,
             "duration": round((a.ended_at - a.started_at).total_seconds(), 3),
             "started": a.started_at.isoformat(timespec="seconds"),
             "log": str(ctx.store.path(a.log_digest)) if a.log_digest else None} for a in attempts]
    runs = [{"run": r.id, "status": r.status, "exit_code": r.exit_code, "actor": r.actor,
             "started": r.started_at.isoformat(timespec="seconds"),
             "ended": r.ended_at.isoformat(timespec="seconds") if r.ended_at else None,
             "tests": len(json.loads(r.options or "{}").get("tests", [])),
             "attempts": sum(1 for a in attempts if a.run_id == r.id)}
            for r in ctx.catalog.runs(version.digest) if not tests or any(a.run_id == r.id for a in attempts)]
    if as_json:
        console.print_json(json.dumps({"image": f"{version.product.name}@{version.serial}",
                                       "digest": f"sha256:{version.digest}", "runs": runs, "attempts": rows}))
        return
    console.print(f"{version.product.name}@{version.serial} ({version.state}) sha256:{version.digest[:12]}")
    for run in runs:
        if run["status"] != "finished":
            note = {"aborted": "the imageci process running it died; what it recorded is below",
                    "interrupted": "stopped by Ctrl-C/SIGTERM", "running": "still running"}.get(str(run["status"]), "")
            console.print(f"[yellow]run {run['run']} {run['status']}[/] ({run['started']} → {run['ended'] or '…'}): "
                          f"{run['attempts']} attempt(s) recorded for {run['tests']} planned test(s) — {note}",
                          highlight=False)
    table = Table("run", "test", "testbed", "try", "verdict", "exit", "seconds", "started", "reason / log")
    colours = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "flaky": "yellow"}
    for r in rows:
        verdict = str(r["verdict"])
        table.add_row(str(r["run"]), str(r["test"]), str(r["testbed"]), str(r["attempt"]),
                      f"[{colours.get(verdict, 'white')}]{verdict}[/]",
                      "-" if r["exit_code"] is None else str(r["exit_code"]), f"{r['duration']:.3f}",
                      str(r["started"]), str(r["reason"] or r["log"] or ""))
    console.print(table)


@app.command()
@handle_errors
def promote(ref: RefArg,
            to: Annotated[str, typer.Option("--to", help="target channel")] = "stable",
            force: Annotated[bool, typer.Option("--force", help="promote although the gate does not hold")] = False,
            reason: Annotated[str, typer.Option("--reason", help="why (required with --force; audited)")] = "",
            ) -> None:
    """Promote a version to stable; refused unless its gate holds."""
    if to != "stable":
        raise UsageError(f"can only promote to 'stable' (got {to!r})")
    ctx = Context.load()
    version = ctx.catalog.resolve(ref)
    gate = ctx.gate_for(version)
    result = None
    if gate is not None:
        suite = load_suite(ctx.suite_dir_for(version, None))
        checks = checks_of(suite)
        waiver = flake_policy(ctx, version, suite, checks, None, warn=False)
        result = evaluate_gate(ctx.catalog, version, required_checks(checks, gate.tests), gate.testbeds, waiver)
    promoted = do_promote(ctx.catalog, version, result, keep=ctx.keep_for(version), force=force, reason=reason)
    console.print(f"[green]promoted[/] {version.product.name}@{version.serial} to stable"
                  + (" (forced)" if promoted.forced else ""))
    for old in promoted.retired:
        console.print(f"retired {old.product.name}@{old.serial} (inactive)")


@app.command()
@handle_errors
def pipeline(definition: DefArg,
             force_build: Annotated[bool, typer.Option("--force-build", help="rebuild even if unchanged")] = False,
             jobs: JobsOpt = None, retries: RetriesOpt = 0, rerun_all: RerunOpt = False,
             junit: JunitOpt = None, tap: TapOpt = None, quarantine: QuarantineOpt = None,
             limit: LimitOpt = None) -> None:
    """build → publish to testing → test the gate suite → promote to stable if the gate holds."""
    ctx = Context.load()
    loaded = load_definition(definition)
    if loaded.definition.tests is None:
        raise UsageError(f"{definition}: the definition has no 'tests' section; nothing can gate it")
    result, _ = _build(ctx, definition, force_build)
    version = result.version  # type: ignore[attr-defined]
    ref = f"{version.product.name}@{version.serial}"
    gate = loaded.definition.tests.gate
    code = run_tests(ctx, TestOptions(ref, None, None, list(gate.testbeds), jobs, retries, rerun_all, junit, tap,
                                      quarantine=quarantine, limits=limit or []))
    if code == ExitCode.INTERRUPTED:
        raise typer.Exit(int(code))
    version = ctx.catalog.resolve(ref)
    suite = load_suite(loaded.suite_dir())  # type: ignore[arg-type]
    checks = checks_of(suite)
    waiver = flake_policy(ctx, version, suite, checks, quarantine, warn=False)
    gres = evaluate_gate(ctx.catalog, version, required_checks(checks, gate.tests), gate.testbeds, waiver)
    if version.state == State.STABLE:
        console.print(f"{ref} is already stable")
        raise typer.Exit(int(ExitCode.OK))
    if not gres.holds:
        err_console.print(gres.explain())
        err_console.print(f"[red]not promoted[/]: {ref} stays on testing")
        raise typer.Exit(int(code if code != ExitCode.OK else ExitCode.GATE_REFUSED))
    promoted = do_promote(ctx.catalog, version, gres, keep=loaded.definition.keep)
    console.print(f"[green]gate holds[/]: promoted {ref} to [bold]stable[/]")
    for old in promoted.retired:
        console.print(f"retired {old.product.name}@{old.serial} (inactive)")


@app.command()
@handle_errors
def events(ref: RefArg) -> None:
    """The audit trail of a version: every state change, who, when, why."""
    ctx = Context.load()
    version = ctx.catalog.resolve(ref)
    rows = [(as_utc(e.at), f"{e.from_state or '-'} → {e.to_state}", e.actor, e.reason)
            for e in ctx.catalog.events(version.id)]
    for r in ctx.catalog.runs(version.digest):
        rows.append((as_utc(r.started_at), f"run {r.id} started", r.actor, ""))
        if r.ended_at is not None:
            why = {"aborted": "the imageci process running it died (killed or crashed)",
                   "interrupted": "Ctrl-C / SIGTERM"}.get(r.status, "")
            exit_note = f"exit {r.exit_code}" if r.exit_code is not None else ""
            rows.append((as_utc(r.ended_at), f"run {r.id} {r.status}", r.actor,
                         "; ".join(x for x in (exit_note, why) if x)))
    table = Table("at", "event", "actor", "reason")
    for at, what, actor, reason in sorted(rows, key=lambda row: row[0]):
        table.add_row(at.isoformat(timespec="seconds"), what, actor, reason)
    console.print(table)


@app.command()
@handle_errors
def verify() -> None:
    """Re-hash every blob in the artifact store, and compare every unpacked rootfs and VM disk
    with what it was made from; exit 7 if anything is corrupt (changed caches are discarded)."""
    ctx = Context.load()
    n, bad = ctx.store.verify_all()
    for digest in bad:
        err_console.print(f"[red]corrupt[/] sha256:{digest} ({ctx.store.path(digest)})")
    caches, changed = verify_caches(ctx.settings.rootfs_cache, ctx.settings.home / "vm", ctx.store)
    for line in changed:
        err_console.print(f"[red]changed[/] {escape(line)}", highlight=False)
    console.print(f"verified {n} blob(s): {len(bad)} corrupt; {caches} cache(s): {len(changed)} changed")
    if bad or changed:
        raise typer.Exit(int(ExitCode.STORE_CORRUPT))


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@app.command()
@handle_errors
def prune(older_than: Annotated[str, typer.Option("--older-than", help="age, e.g. 3d")] = "3d",
          name: Annotated[str | None, typer.Option("--name", help="only this product")] = None,
          dry_run: Annotated[bool, typer.Option("--dry-run")] = False) -> None:
    """Retire testing versions older than a cutoff that never had a passing run."""
    ctx = Context.load()
    pruned = do_prune(ctx.catalog, older_than=_duration(older_than), name=name, dry_run=dry_run)
    for v in pruned:
        console.print(f"{'would retire' if dry_run else 'retired'} {v.product.name}@{v.serial}")
    console.print(f"{len(pruned)} version(s) {'to prune' if dry_run else 'pruned'}")


@app.command()
@handle_errors
def flaky(name: Annotated[str | None, typer.Argument(help="only this product")] = None,
          since: Annotated[str, typer.Option("--since", help="how far back, e.g. 30d")] = "30d",
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every transient failure: tests that failed and then passed within one run, with the attempt numbers."""
    ctx = Context.load()
    entries = flaky_report(ctx.catalog, name, utcnow() - _duration(since))
    if as_json:
        console.print_json(json.dumps([{"image": f"{e.product}@{e.serial}", "run": e.run_id, "test": e.test_id,
                                        "testbed": e.testbed, "failed_attempts": e.failed_attempts,
                                        "attempts": [{"attempt": n, "verdict": v} for n, v in e.attempts]}
                                       for e in entries]))
        return
    table = Table("image", "run", "test", "testbed", "attempts")
    for e in entries:
        table.add_row(f"{e.product}@{e.serial}", str(e.run_id), e.test_id, e.testbed,
                      ", ".join(f"#{n} {v}" for n, v in e.attempts))
    console.print(table)
    tests = {(e.test_id, e.testbed) for e in entries}
    console.print(f"{len(entries)} transient failure(s) of {len(tests)} test(s) in the last {since}")


@app.command()
@handle_errors
def doctor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What this host can run (builder, sandbox, podman, qemu + KVM, ssh) and why not.
    Exit 0 when the embedded defaults (build + sandbox) work, 3 when they do not."""
    ctx = Context.load()
    findings = check_host(ctx.settings.home)
    if as_json:
        console.print_json(json.dumps([f.__dict__ for f in findings]))
    else:
        table = Table("area", "check", "", "detail")
        for f in findings:
            mark = "[green]ok[/]" if f.ok else ("[red]MISSING[/]" if f.required else "[yellow]no[/]")
            table.add_row(f.area, f.name, mark, escape(f.detail))
        console.print(table)
    if not all(f.ok for f in findings if f.required):
        raise typer.Exit(int(ExitCode.ERROR))


@app.command()
@handle_errors
def gc(force: Annotated[bool, typer.Option("--force", help="even while another imageci runs: remove only what "
                                             "dead processes left")] = False) -> None:
    """Remove what a crashed or killed imageci left behind: sandboxes and their
    mounts, disks, VMs, containers, build directories, cgroups; mark its runs aborted.
    Only this home's resources, and only those no live imageci holds."""
    ctx = Context.load()
    _ = ctx.catalog  # opening it marks runs whose process died as aborted
    report, live = collect_garbage(ctx.settings, ctx.lock, force=force)
    for line in report:
        console.print(line, highlight=False)
    kept = f"; kept what {live} live imageci process(es) hold" if live else ""
    console.print(f"{len(report)} leftover(s) removed{kept}")


if __name__ == "__main__":
    app()
