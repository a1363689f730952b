"""`imageci bisect`: which change between the last good version and REF makes a test fail."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json
from imageci.cli.options import ExecutorOpt
from imageci.errors import UsageError

if TYPE_CHECKING:
    from imageci.app.bisect import BisectRequest, BisectResult
    from imageci.cli.sources import Server

FINDING_EXIT = {"culprit": 0, "unreliable-ends": 12}  # every other finding: 13 (inconclusive)
POLL = 1.0  # seconds between looks at a bisection the server carries out


def register(main: typer.Typer) -> None:
    main.command("bisect")(bisect)
    main.command("bisections")(bisections)


@handle_errors
def bisect(ref: Annotated[str, typer.Argument(help="the bad version: NAME@SERIAL, NAME:CHANNEL, NAME")],
           test: Annotated[str, typer.Argument(help="the failing test's id (as `results` shows it)")],
           good: Annotated[str | None, typer.Option("--good", help="the good end (default: the newest older "
                                                    "version the test passed on)")] = None,
           repeat: Annotated[int, typer.Option("--repeat", min=1, max=20, help="runs of each end and of each "
                                               "confirmation")] = 3,
           testbed: Annotated[str | None, typer.Option("--testbed", help="sandbox or qemu (default: where the "
                                                       "test last ran on REF)")] = None,
           jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, max=64, help="steps run at once")] = 1,
           budget: Annotated[int | None, typer.Option("--budget", min=1, help="stop after this many test "
                                                      "runs")] = None,
           executor: ExecutorOpt = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Find the smallest set of package changes (or the files changed outside packages) between the last good
    version and REF that makes TEST fail, testing intermediate images made from the two versions' trees.
    With a server (IMAGECI_SERVER), the server bisects (on its workers when its executor is celery) and this
    waits for its finding. Exit 0: culprit found and confirmed; 12: an end did not reproduce (flaky); 13:
    inconclusive."""
    from imageci.app.bisect import BisectArgs, BisectRequest
    from imageci.cli.sources import Server, source

    asked = BisectRequest(test=test, good=good, repeat=repeat, testbed=testbed, jobs=jobs, budget=budget)
    where = source()
    if isinstance(where, Server):
        if executor is not None:
            raise UsageError("--executor: a server bisects on its own executor (IMAGECI_EXECUTOR on its host)")
        with console.status(f"bisecting {test} on {ref} on the server…"):
            result = _on_server(where, ref, asked)
    else:
        from imageci.app.bisect import run_bisect
        from imageci.app.session import Session

        args = BisectArgs(ref=ref, executor=executor, **asked.model_dump())  # type: ignore[arg-type]
        with console.status(f"bisecting {test} on {ref}…"):
            result = run_bisect(Session.open(), args)
    if as_json:
        print_json(result)
    else:
        _show(result)
    raise typer.Exit(FINDING_EXIT.get(result.finding, 13))


def _on_server(server: Server, ref: str, asked: BisectRequest) -> BisectResult:
    """Start the bisection on the server and wait for its finding."""
    from imageci.app.bisections import BisectionsArgs, BisectStartArgs, bisect_op, bisections_op

    begun = server.call(bisect_op, BisectStartArgs(ref=ref, body=asked))
    while True:
        found = [b for b in server.call(bisections_op, BisectionsArgs(ref=begun.image, test=begun.test))
                 if b.id == begun.id]
        if not found:
            raise UsageError(f"the server no longer shows bisection {begun.id}")
        if found[0].finding != "running":
            return found[0]
        time.sleep(POLL)


def _show(result: BisectResult) -> None:
    console.print(f"{result.test} on {result.testbed}: {result.good} (good) .. {result.image} (bad), "
                  f"{result.candidates} change(s); failure: {result.signature or '-'}", highlight=False,
                  markup=False)
    for step in result.steps:
        changes = f" [{len(step.changes)} change(s)]" if step.changes else ""
        told = f" → {step.answer}" if step.answer else ""
        console.print(f"  {step.what}{changes}: {', '.join(step.verdicts)}{told}", highlight=False, markup=False)
    out = console if result.finding == "culprit" else err_console
    out.print(f"{result.finding}: {result.explanation}", highlight=False, markup=False, soft_wrap=True)
    for c in result.culprits:
        console.print(f"  {c.change}" + (f" (source {c.source})" if c.source and c.source != c.package else ""),
                      highlight=False, markup=False)
        for entry in c.changelog[:3]:
            console.print("    " + entry.replace("\n", "\n    "), highlight=False, markup=False)
    console.print(f"{result.test_runs} test run(s) in {result.seconds:.1f} s (bisection {result.id})",
                  highlight=False)


@handle_errors
def bisections(ref: Annotated[str, typer.Argument(help="the version bisected (the bad end)")],
               test: Annotated[str | None, typer.Argument(help="only this test's")] = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The bisections kept for a version: when, of which test, what each found."""
    from imageci.app.bisections import BisectionsArgs, bisections_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    found = source().call(bisections_op, BisectionsArgs(ref=ref, test=test))
    if as_json:
        print_json(found)
        return
    write_columns(("id", "test", "testbed", "good", "finding", "culprit", "runs"),
                  ((str(r.id), r.test, r.testbed, r.good or "-", r.finding,
                    "; ".join(c.change for c in r.culprits) or "-", str(r.test_runs)) for r in found))
