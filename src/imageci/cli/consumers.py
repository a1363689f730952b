"""`imageci consumers add|list|remove`: projects that build on an image register their suites (on this
home, or on the server); `imageci check-consumer`: a project's pre-deploy check against any version."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json

if TYPE_CHECKING:
    from imageci.app.checkconsumer import RuntimeReport

consumers_app = typer.Typer(help="Consumers: projects that build on an image and register their suites. Every run "
                            "of the image's suite runs theirs too; a gating one blocks a promotion that breaks "
                            "it (it passed on the current stable version).", no_args_is_help=True)


def register(main: typer.Typer) -> None:
    main.add_typer(consumers_app, name="consumers")
    main.command("check-consumer")(check_consumer)


@consumers_app.command("add")
@handle_errors
def add(name: Annotated[str, typer.Argument(help="the consumer's name; its test id is consumer:NAME")],
        image: Annotated[str, typer.Option("--image", help="the product (image name) it builds on")],
        command: Annotated[str, typer.Option("--command", help="its tests, run with /bin/sh -c in the suite's "
                                             "directory inside the testbed; exit 0 passes, 77 skips")],
        suite: Annotated[Path | None, typer.Option("--suite", help="the directory holding the project (read on the "
                                                   "machine that runs the tests)")] = None,
        git: Annotated[str | None, typer.Option("--git", help="or a git repository (a path or URL) holding "
                                                "it")] = None,
        ref: Annotated[str | None, typer.Option("--ref", help="with --git: the branch, tag or commit")] = None,
        subdir: Annotated[str | None, typer.Option("--subdir", help="with --git: the project's directory in "
                                                   "the repository")] = None,
        setup: Annotated[str | None, typer.Option("--setup", help="run first, e.g. installing its dependencies; "
                                                  "its failure fails the suite")] = None,
        wheelhouse: Annotated[Path | None, typer.Option("--wheelhouse", help="a directory of wheels copied in "
                                                        "with it; pip installs from it, offline")] = None,
        timeout: Annotated[int, typer.Option("--timeout", min=1, help="seconds, for setup and command "
                                             "each")] = 600,
        gating: Annotated[bool, typer.Option("--gating", help="block a promotion that breaks it")] = False,
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Register a consumer of an image (scope promote in its namespace); its first snapshot is taken now."""
    from pydantic import ValidationError

    from imageci.app.consumers import ConsumerAddArgs, ConsumerRequest, consumer_add
    from imageci.cli.sources import source
    from imageci.errors import UsageError

    try:
        request = ConsumerRequest(name=name, product=image, suite=str(suite) if suite else None, git=git, ref=ref,
                                  subdir=subdir, command=command, setup=setup,
                                  wheelhouse=str(wheelhouse) if wheelhouse else None, timeout=timeout,
                                  gating=gating)
    except ValidationError as exc:
        raise UsageError("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())) from None
    row = source().call(consumer_add, ConsumerAddArgs(body=request))
    if as_json:
        print_json(row)
        return
    what = f"{row.source}@{row.ref} ({(row.revision or '')[:12]})" if row.ref else row.source
    console.print(f"consumer {row.name} of {row.product}{' (gating)' if row.gating else ''}: {what}; it runs as "
                  f"{row.test} with every run of {row.product}'s suite", highlight=False)


@consumers_app.command("list")
@handle_errors
def listing(image: Annotated[str | None, typer.Argument(help="only this product's")] = None,
            removed: Annotated[bool, typer.Option("--removed", help="also the removed ones")] = False,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The registered consumers: product, source, command, gating, newest snapshot."""
    from imageci.app.consumers import ConsumerListArgs, consumer_list
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(consumer_list, ConsumerListArgs(product=image, removed=removed))
    if as_json:
        print_json(rows)
        return
    write_columns(("name", "image", "gating", "source", "command", "snapshot", "state"),
                  ((r.name, r.product, "yes" if r.gating else "no",
                    f"{r.source}@{r.ref}" if r.ref else r.source, r.command, (r.snapshot or "-")[:19],
                    "removed" if r.removed else "active") for r in rows))


@consumers_app.command("remove")
@handle_errors
def remove(name: Annotated[str, typer.Argument(help="the consumer's name")]) -> None:
    """Remove a consumer (scope promote); it is kept, marked removed, and no longer runs nor gates."""
    from imageci.app.consumers import ConsumerName, consumer_remove
    from imageci.cli.sources import source

    row = source().call(consumer_remove, ConsumerName.model_construct(name=name))
    console.print(f"removed consumer {row.name} of {row.product}", highlight=False)


@handle_errors
def check_consumer(
        ref: Annotated[str, typer.Argument(help="the version to check against: NAME:stable, NAME:testing, "
                                           "NAME@VERSION")],
        project: Annotated[Path, typer.Argument(help="the project's directory (its runtime files are read "
                                                "first: .python-version, runtime.txt, package.json, "
                                                ".tool-versions)")],
        command: Annotated[str | None, typer.Option("--command", help="its tests (without: only the runtime "
                                                    "check)")] = None,
        setup: Annotated[str | None, typer.Option("--setup", help="run first, e.g. installing "
                                                  "dependencies")] = None,
        wheelhouse: Annotated[Path | None, typer.Option("--wheelhouse", help="a directory of wheels pip "
                                                        "installs from, offline")] = None,
        testbed: Annotated[list[str] | None, typer.Option("--testbed", help="where to run it (default: the "
                                                          "version's gate testbeds)")] = None,
        timeout: Annotated[int, typer.Option("--timeout", min=1, help="seconds, for setup and command "
                                             "each")] = 600,
        run_anyway: Annotated[bool, typer.Option("--run-anyway", help="run the suite even when a declared "
                                                 "runtime is not met")] = False,
        junit: Annotated[Path | None, typer.Option("--junit", help="write a JUnit XML report")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="the runtime check and the verdict as JSON")] = False
        ) -> None:
    """A consumer's pre-deploy check: does the project still work on this version? Reads the runtimes the
    project declares and says which the image does not meet (exit 11, nothing run, unless --run-anyway);
    then runs its suite in a fresh testbed of the version (fetched from the server when one is configured).
    Exit 0: it passed; 1: it failed; 3: the testbed broke."""
    from imageci.app import checkconsumer
    from imageci.app.session import Session
    from imageci.cli.sources import remote_client
    from imageci.cli.testing import show_event, show_outcome, show_plan

    session = Session.open()
    client = remote_client(session.settings)
    request = checkconsumer.CheckRequest(ref=ref, project=project, command=command, setup=setup,
                                         wheelhouse=wheelhouse, testbeds=testbed or [], timeout=timeout,
                                         run_anyway=run_anyway, junit=junit)
    with console.status(f"reading {ref} on {client.remote.url}…") if client else contextlib.nullcontext():
        runtimes = checkconsumer.check_runtimes(session, request, client)
    _runtimes_verdict(runtimes, as_json, blocked=bool(runtimes.unmet) and not run_anyway, idle=command is None)
    outcome = checkconsumer.run_check(session, request, client, on_plan=None if as_json else show_plan,
                                      on_event=None if as_json else show_event)
    if as_json:
        print_json(checkconsumer.CheckOutcome(runtimes=runtimes, exit_code=int(outcome.exit_code),
                                              verdict=outcome.report.results[0].verdict if outcome.report.results
                                              else None, run=outcome.report.run_id))
    else:
        show_outcome(outcome)
    raise typer.Exit(int(outcome.exit_code))


def _runtimes_verdict(runtimes: RuntimeReport, as_json: bool, *, blocked: bool, idle: bool) -> None:
    """Show the runtime check; exit 11 when it ``blocked`` the run (a runtime unmet), 0 when there is
    nothing to run (``idle``: no command)."""
    from imageci.app import checkconsumer
    from imageci.exitcodes import ExitCode

    if not as_json:
        console.print(f"{runtimes.image} ({runtimes.digest[:19]}): {runtimes.summary}", highlight=False)
        for line in runtimes.unmet:
            err_console.print(f"  [red]unmet[/]: {line}", highlight=False)
        for line in runtimes.met:
            console.print(f"  [green]met[/]: {line}", highlight=False)
        for line in runtimes.ignored:
            console.print(f"  [dim]not checked: {line}[/]", highlight=False)
    if not blocked and not idle:
        return
    code = int(ExitCode.RUNTIME_UNMET) if blocked else 0
    if as_json:
        print_json(checkconsumer.CheckOutcome(runtimes=runtimes, exit_code=code))
    elif code:
        err_console.print("[red]not run[/]: the image does not meet a runtime the project declares "
                          "(--run-anyway runs it still)")
    raise typer.Exit(code)
