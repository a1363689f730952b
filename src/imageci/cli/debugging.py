"""Debugging where it failed: `imageci shell`, `held`, `attach`, `release` (and `rerun`, in running.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json

if TYPE_CHECKING:
    from imageci.app.operations import Asks
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


def _asks(hold: int | None) -> tuple[Asks, Asks]:
    """Who answers for holds: the configured server, else this home — this home too, first, for a hold that
    a run of this machine keeps (its holder is alive here). (the one to ask about ``hold``, this home)"""
    from imageci.app.holdpipes import Here
    from imageci.app.holds import kept_here
    from imageci.app.session import Session
    from imageci.cli.sources import remote_client

    here = Here(Session.open())
    server = remote_client(here.session.settings)
    if server is None:
        return here, here
    return (here if hold is not None and kept_here(here.session, hold) else server), here


@handle_errors
def held(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The testbeds held for you (`--hold-on-failure`): which test's, where, by whom, until when, and the
    command that enters each. With a server configured, its holds (on its workers) and this machine's."""
    from imageci.app.holds import HoldRow, held_op
    from imageci.app.operations import NoArgs
    from imageci.cli.columns import write_columns

    asks, here = _asks(None)
    rows = asks.call(held_op, NoArgs())
    if here is not asks:
        mine: list[HoldRow] = here.call(held_op, NoArgs())
        rows = rows + mine
    if as_json:
        print_json(rows)
        return
    write_columns(("id", "run", "test", "testbed", "where", "by", "until", "enter it"),
                  ((str(h.id), str(h.run), h.test, h.testbed, h.worker or h.host, h.by, h.until, h.command)
                   for h in rows))


@handle_errors
def attach(hold: HoldArg, command: CommandArg = None) -> None:
    """Enter a held testbed: a login shell on your terminal, or CMD (its output on yours). One a worker holds
    is reached through the server. Exits with the command's exit status; 2 when nothing is held as ID (any
    more) that you may enter."""
    from imageci.app.holdpipes import Here, enter
    from imageci.app.holds import connect, on_worker
    from imageci.testbeds.terminal import client

    asks, _here = _asks(hold)
    asked: dict[str, object] = {"op": "attach", "hold": hold, "argv": command or None}
    if isinstance(asks, Here) and on_worker(asks.session, hold) is None:
        with connect(asks.session, hold) as conn:
            raise typer.Exit(client(conn, asked))
    raise typer.Exit(enter(asks, hold, asked))


@handle_errors
def release(hold: HoldArg) -> None:
    """Remove a held testbed now (its time would end it anyway). One a worker holds is removed by its worker,
    which this waits for a while."""
    from imageci.app.holds import HoldArgs, release_op

    asks, _here = _asks(hold)
    done = asks.call(release_op, HoldArgs(hold_id=hold))
    if done.released:
        console.print(f"released hold {hold}: its testbed is removed", highlight=False)
    else:
        console.print(f"asked {done.hold.worker} to release hold {hold}: it removes the testbed when it next asks "
                      "the server", highlight=False)
