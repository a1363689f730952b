"""Commands about versions: `images`, `results`, `log`, `promote`, `gate`, `events`, `prune`, `flaky`, `runs`;
each asks the operation of this home or of the configured server (``cli.sources``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from imageci.cli.context import COLOURS, console, handle_errors, print_json
from imageci.cli.options import RefArg


def register(main: typer.Typer) -> None:
    main.command()(images)
    main.command()(results)
    main.command()(log)
    main.command()(promote)
    main.command()(gate)
    main.command()(events)
    main.command()(prune)
    main.command()(flaky)
    main.command()(runs)


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


RUN_NOTES = {"aborted": "the imageci process running it died; what it recorded is below",
             "interrupted": "stopped by Ctrl-C/SIGTERM", "running": "still running"}


@handle_errors
def results(ref: RefArg, tests: Annotated[list[str] | None, typer.Argument(help="only these tests")] = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every recorded attempt for an image: verdict, duration, log path."""
    from imageci.app.queries import ResultsArgs, results_op
    from imageci.app.regressions import marked
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    res = source().call(results_op, ResultsArgs(ref=ref, test=tests))
    if as_json:
        print_json(res.model_dump(mode="json", include={"image", "digest", "architecture", "runs", "attempts",
                                                        "reference"}))
        return
    arch = f", {res.architecture}" if res.architecture else ""
    told = f"; verdicts told against the stable version {res.reference}" if res.reference else ""
    console.print(f"{res.image} ({res.state}{arch}) {res.digest[:19]}{told}", highlight=False)
    for run in res.runs:
        if run.reference_for:
            console.print(f"run {run.run} is a reference run: what failed on {run.reference_for} and had no verdict "
                          "here", highlight=False)
        if run.repeats:
            console.print(f"run {run.run} repeats run {run.repeats}", highlight=False)
        if run.status != "finished":
            console.print(f"[yellow]run {run.run} {run.status}[/] ({run.started} → {run.ended or '…'}): "
                          f"{run.attempts} attempt(s) recorded for {run.tests} planned test(s) — "
                          f"{RUN_NOTES.get(run.status, '')}", highlight=False)
    write_columns(("run", "test", "testbed", "try", "verdict", "change", "exit", "seconds", "started",
                   "reason / log"),
                  ((str(a.run), a.test, a.testbed, str(a.attempt), a.verdict, marked(a.change),
                    "-" if a.exit_code is None else str(a.exit_code), f"{a.duration:.3f}", a.started,
                    (a.reason or a.log or "") + (f" [known failure: {a.known}]" if a.known else "")
                    + "".join(f" [{f.kind}: {f.text}]" for f in a.findings))
                   for a in res.attempts),
                  colour=lambda column, value: COLOURS.get(value) if column == 4 else None)


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


@handle_errors
def flaky(name: Annotated[str | None, typer.Argument(help="only this product")] = None,
          since: Annotated[str, typer.Option("--since", help="how far back, e.g. 30d")] = "30d",
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every transient failure: tests that failed and then passed within one run, with the attempt numbers."""
    from imageci.app.flakiness import FlakyArgs, flaky_op
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
    from imageci.app.knowncounts import KnownCountArgs, flaky_known

    for k in source().call(flaky_known, KnownCountArgs(name=name, since=since)):
        console.print(f"known failure {k.tracker}: {k.failures} failure(s) of {k.test} ({k.product}), the last "
                      f"{k.last.isoformat(timespec='seconds')}", highlight=False, markup=False)


@handle_errors
def runs(name: Annotated[str, typer.Argument(help="the product")],
         limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="the newest this many")] = 20,
         as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """The newest runs of a product, newest first: the version, status, exit code, who ran it, when."""
    from imageci.app.queries import RunsArgs, runs_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(runs_op, RunsArgs(name=name, limit=limit))
    if as_json:
        print_json(rows)
        return
    write_columns(("run", "image", "status", "exit", "actor", "started", "ended"),
                  ((str(r.run), r.image, r.status, "-" if r.exit_code is None else str(r.exit_code), r.actor,
                    r.started, r.ended or "-") for r in rows))
