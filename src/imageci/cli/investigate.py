"""`imageci bisect`: which change between the last good version and REF makes a test fail."""

from __future__ import annotations

from typing import Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json

FINDING_EXIT = {"culprit": 0, "unreliable-ends": 12}  # every other finding: 13 (inconclusive)


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
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Find the smallest set of package changes (or the files changed outside packages) between the last good
    version and REF that makes TEST fail, testing intermediate images made from the two versions' trees.
    Exit 0: culprit found and confirmed; 12: an end did not reproduce (flaky); 13: inconclusive."""
    from imageci.app.bisect import BisectArgs, run_bisect
    from imageci.app.session import Session

    session = Session.open()
    args = BisectArgs(ref=ref, test=test, good=good, repeat=repeat, testbed=testbed, jobs=jobs, budget=budget)
    with console.status(f"bisecting {test} on {ref}…"):
        result = run_bisect(session, args)
    if as_json:
        print_json(result)
    else:
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
    raise typer.Exit(FINDING_EXIT.get(result.finding, 13))


@handle_errors
def bisections(ref: Annotated[str, typer.Argument(help="the version bisected (the bad end)")],
               test: Annotated[str | None, typer.Argument(help="only this test's")] = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The bisections kept for a version: when, of which test, what each found."""
    from imageci.app.bisect import BisectionsArgs, bisections_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    found = source().call(bisections_op, BisectionsArgs(ref=ref, test=test))
    if as_json:
        print_json(found)
        return
    write_columns(("id", "test", "testbed", "good", "finding", "culprit", "runs"),
                  ((str(r.id), r.test, r.testbed, r.good or "-", r.finding,
                    "; ".join(c.change for c in r.culprits) or "-", str(r.test_runs)) for r in found))
