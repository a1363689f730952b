"""Debugging where it failed: `imageci shell`, `held`, `attach`, `release` (and `rerun`, in running.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json
from imageci.cli.options import RefArg

HoldArg = Annotated[int, typer.Argument(metavar="ID", min=1, help="the hold, as `imageci held` lists it")]
CommandArg = Annotated[list[str] | None, typer.Argument(metavar="[-- CMD…]", help="a command to run instead of a "
                                                        "login shell")]


def register(main: typer.Typer) -> None:
    main.command()(shell)
    main.command()(held)
    main.command()(attach)
    main.command()(release)


@handle_errors
def shell(ref: RefArg, command: CommandArg = None,
          testbed: Annotated[str, typer.Option("--testbed", help="which testbed (as for `imageci run`)")] = "sandbox",
          needs: Annotated[list[str] | None, typer.Option("--needs", help="a capability the testbed must offer, "
                                                          "as a test's `needs` (repeatable; e.g. "
                                                          "isolation-container for podman's systemd mode)")] = None,
          ) -> None:
    """A fresh testbed of exactly this version, with the isolation and limits a test gets, on your terminal: a
    login shell, or CMD. Removed when it exits. Recorded as an event of the version (never as test evidence).
    Exits with the command's exit status."""
    from imageci.app.session import Session
    from imageci.app.shells import shell as open_shell
    from imageci.cli.sources import remote_client
    from imageci.errors import UsageError
    from imageci.testbeds.terminal import on_terminal

    session = Session.open()
    if remote_client(session.settings) is not None:
        raise UsageError("imageci shell opens testbeds of this home's versions; unset IMAGECI_SERVER (or "
                         "`imageci logout`) to use it")
    raise typer.Exit(open_shell(session, ref, on_terminal, testbed=testbed, argv=command or [], needs=needs or []))


@handle_errors
def held(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The testbeds held for a person (`--hold-on-failure`): which test's, by whom, until when, and the command
    that enters each."""
    from imageci.app.holds import held as holds
    from imageci.app.session import Session
    from imageci.cli.columns import write_columns

    rows = holds(Session.open())
    if as_json:
        print_json(rows)
        return
    write_columns(("id", "run", "test", "testbed", "by", "until", "enter it"),
                  ((str(h.id), str(h.run), h.test, h.testbed, h.by, h.until, h.command) for h in rows))


@handle_errors
def attach(hold: HoldArg, command: CommandArg = None) -> None:
    """Enter a held testbed: a login shell on your terminal, or CMD (its output on yours). Exits with the
    command's exit status; 2 when nothing is held as ID (any more)."""
    from imageci.app.holds import connect
    from imageci.app.session import Session
    from imageci.testbeds.terminal import client

    with connect(Session.open(), hold) as conn:
        raise typer.Exit(client(conn, {"op": "attach", "hold": hold, "argv": command or None}))


@handle_errors
def release(hold: HoldArg) -> None:
    """Remove a held testbed now (its time would end it anyway)."""
    from imageci.app.holds import release as let_go
    from imageci.app.session import Session

    let_go(Session.open(), hold)
    console.print(f"released hold {hold}: its testbed is removed", highlight=False)
