"""`imageci quarantine add|list|lift`: quarantine entries kept in the catalog (on this home, or on the
server), next to the suites' quarantine.yaml files."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json

quarantine_app = typer.Typer(help="Quarantine entries kept in the catalog: add (with a tracker, an expiry and a "
                             "reason), list, lift. They apply like a suite's quarantine.yaml entries.",
                             no_args_is_help=True)


def register(main: typer.Typer) -> None:
    main.add_typer(quarantine_app, name="quarantine")


@quarantine_app.command("add")
@handle_errors
def add(product: Annotated[str, typer.Argument(help="the product (image name)")],
        test: Annotated[str, typer.Argument(help="glob on test ids, e.g. net-* or dep8:gzip/*")],
        tracker: Annotated[str, typer.Option("--tracker", help="where the problem is followed up (a URL, or an id "
                                             "like debian#123456)")],
        expires: Annotated[str, typer.Option("--expires", metavar="YYYY-MM-DD", help="the last day it applies")],
        reason: Annotated[str, typer.Option("--reason", help="why: shown with every waived result")],
        mode: Annotated[str, typer.Option("--mode", help="warn: run it, its failures do not block; skip: do not "
                                          "run it")] = "warn",
        testbed: Annotated[list[str] | None, typer.Option("--testbed", help="only on these testbeds (globs; "
                                                          "repeatable)")] = None,
        arch: Annotated[list[str] | None, typer.Option("--arch", help="only on these architectures "
                                                       "(repeatable)")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Quarantine a product's tests until EXPIRES (scope promote in its namespace); prints the entry's id."""
    from pydantic import ValidationError

    from imageci.app.quarantines import QuarantineAddArgs, QuarantineRequest, quarantine_add
    from imageci.cli.sources import source
    from imageci.errors import UsageError

    try:
        request = QuarantineRequest(product=product, test=test, tracker=tracker, expires=date.fromisoformat(expires),
                                    mode=mode, testbeds=testbed or None, arch=arch or None,  # type: ignore[arg-type]
                                    reason=reason)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise UsageError("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
        raise UsageError(f"--expires must be a date, YYYY-MM-DD (got {expires!r})") from None
    row = source().call(quarantine_add, QuarantineAddArgs(body=request))
    if as_json:
        print_json(row)
        return
    console.print(f"quarantine #{row.id}: {row.test} on {row.product} ({row.mode}) until {row.expires.isoformat()}; "
                  f"lift it with: imageci quarantine lift {row.id}", highlight=False)


@quarantine_app.command("list")
@handle_errors
def listing(product: Annotated[str | None, typer.Argument(help="only this product")] = None,
            lifted: Annotated[bool, typer.Option("--lifted", help="also the lifted catalog entries")] = False,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every quarantine entry: those of each product's newest suite (FILE:LINE) and the catalog's (#ID)."""
    from imageci.app.quarantines import QuarantineListArgs, quarantine_list
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(quarantine_list, QuarantineListArgs(product=product, lifted=lifted))
    if as_json:
        print_json(rows)
        return
    write_columns(("product", "source", "test", "mode", "expires", "state", "tracker", "reason"),
                  ((r.product, r.source, r.test, r.mode, r.expires.isoformat(),
                    "lifted" if r.lifted else ("in force" if r.in_force else "expired"), r.tracker, r.reason)
                   for r in rows))


@quarantine_app.command("lift")
@handle_errors
def lift(entry: Annotated[int, typer.Argument(help="the catalog entry's id (#ID in `quarantine list`)", min=1)],
         reason: Annotated[str, typer.Option("--reason", help="why (kept with the entry)")] = "") -> None:
    """Lift a catalog quarantine entry (scope promote); it is kept, marked lifted."""
    from imageci.app.quarantines import LiftArgs, LiftRequest, quarantine_lift
    from imageci.cli.sources import source

    row = source().call(quarantine_lift, LiftArgs.model_construct(entry_id=entry, body=LiftRequest(reason=reason)))
    console.print(f"lifted quarantine #{row.id} ({row.test} on {row.product})", highlight=False)
