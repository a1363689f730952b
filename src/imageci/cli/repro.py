"""`imageci repro`: build a version again from its recorded inputs and compare the bytes."""

from __future__ import annotations

from typing import Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json


def register(main: typer.Typer) -> None:
    main.command("repro")(repro)


@handle_errors
def repro(ref: Annotated[str, typer.Argument(help="NAME@SERIAL, NAME:CHANNEL or NAME@sha256:DIGEST")],
          mirror: Annotated[str | None, typer.Option("--mirror", help="build from this mirror instead of the "
                                                     "recorded one (e.g. a snapshot.debian.org URL of the build's "
                                                     "date, for an old version)")] = None,
          snapshot: Annotated[bool, typer.Option("--snapshot", help="build from snapshot.debian.org's copy of the "
                                                 "recorded mirror at the recorded date: the package versions of "
                                                 "then")] = False,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Rebuild a version from its recorded definition, mirror and SOURCE_DATE_EPOCH (never from the
    build cache) and compare the digests. Exit 0 when it reproduces bit for bit, 1 when it does not
    (diffoscope's report is stored with the version: `imageci repro` prints its start)."""
    from imageci.app import repro as app_repro
    from imageci.app.session import Session
    from imageci.exitcodes import ExitCode

    session = Session.open()
    with console.status(f"rebuilding {ref}…") as status:
        result = app_repro.repro(session, ref, mirror=mirror, snapshot=snapshot,
                                 on_line=lambda line: status.update(f"rebuilding {ref}: {line[:100]}")
                                 if line.startswith(("I:", "W:", "E:")) else None)
    if as_json:
        print_json(result)
    elif result.reproduced:
        console.print(f"[green]reproduced[/] {result.image} bit for bit ({result.digest[:19]}…, "
                      f"SOURCE_DATE_EPOCH={result.source_date_epoch}, {result.seconds:.0f} s)", highlight=False)
    else:
        err_console.print(f"[red]not reproduced[/]: {result.image} is {result.digest[:19]}…, the rebuild "
                          f"{result.rebuilt[:19]}…", highlight=False)
        for d in result.packages_differ:
            err_console.print(f"  package {d}", highlight=False, markup=False)
        if result.packages_differ:
            err_console.print("the mirror serves other package versions now: rebuild from the archive as it was "
                              f"with --snapshot ({result.snapshot or 'a snapshot URL'})", highlight=False,
                              markup=False)
        err_console.print(f"diffoscope's report is stored with the version as {result.report}; its start:",
                          highlight=False)
        console.print(result.report_excerpt, highlight=False, markup=False, soft_wrap=True)
    if not result.reproduced:
        raise typer.Exit(int(ExitCode.FAILED))
