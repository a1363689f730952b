"""`imageci known-failures add|list|remove`: known failures kept in the catalog (on this home, or on the
server), next to the suites' known-failures.yaml files."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json

known_app = typer.Typer(help="Known failures kept in the catalog: a failure whose log matches a pattern is "
                        "labelled with its tracker (and re-run --retry times); it never passes because of it.",
                        no_args_is_help=True)


def register(main: typer.Typer) -> None:
    main.add_typer(known_app, name="known-failures")


@known_app.command("add")
@handle_errors
def add(product: Annotated[str, typer.Argument(help="the product (image name)")],
        test: Annotated[str, typer.Option("--test", help="glob on test ids, e.g. net-*")],
        pattern: Annotated[str, typer.Option("--pattern", help="a regular expression searched in the failing "
                                             "log")],
        tracker: Annotated[str, typer.Option("--tracker", help="where it is followed up (a URL, or an id like "
                                             "debian#123456)")],
        retry: Annotated[int, typer.Option("--retry", min=0, max=5, help="re-run a matching failure up to this "
                                           "many times (an infrastructure flake)")] = 0,
        expires: Annotated[str | None, typer.Option("--expires", metavar="YYYY-MM-DD", help="the last day it "
                                                    "applies (default: until removed)")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Label the failures of a product's tests whose log matches PATTERN (scope promote in its namespace)."""
    from pydantic import ValidationError

    from imageci.app.knownfailures import KnownAddArgs, KnownRequest, known_add
    from imageci.cli.sources import source
    from imageci.errors import UsageError

    try:
        request = KnownRequest(product=product, test=test, pattern=pattern, tracker=tracker, retry=retry,
                               expires=date.fromisoformat(expires) if expires else None)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise UsageError("; ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors())) from None
        raise UsageError(f"--expires must be a date, YYYY-MM-DD (got {expires!r})") from None
    row = source().call(known_add, KnownAddArgs(body=request))
    if as_json:
        print_json(row)
        return
    console.print(f"known failure #{row.id}: {row.test} on {row.product} matching {row.pattern!r} → {row.tracker}; "
                  f"remove it with: imageci known-failures remove {row.id}", highlight=False, markup=False)


@known_app.command("list")
@handle_errors
def list_(product: Annotated[str | None, typer.Argument(help="only this product")] = None,
          removed: Annotated[bool, typer.Option("--removed", help="removed ones too")] = False,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The known failures kept in the catalog."""
    from imageci.app.knownfailures import KnownListArgs, known_list
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    rows = source().call(known_list, KnownListArgs(product=product, removed=removed))
    if as_json:
        print_json(rows)
        return
    write_columns(("id", "product", "test", "pattern", "tracker", "retry", "expires", "state"),
                  ((str(r.id), r.product, r.test, r.pattern, r.tracker, str(r.retry),
                    r.expires.isoformat() if r.expires else "-",
                    "in force" if r.in_force else ("removed" if r.removed else "expired")) for r in rows))


@known_app.command("remove")
@handle_errors
def remove(entry_id: Annotated[int, typer.Argument(help="the entry's id (known-failures list)", min=1)]) -> None:
    """Remove a known failure (scope promote); it stays listed with --removed."""
    from imageci.app.knownfailures import KnownRemoveArgs, known_remove
    from imageci.cli.sources import source

    row = source().call(known_remove, KnownRemoveArgs(entry_id=entry_id))
    console.print(f"removed known failure #{row.id} ({row.test} on {row.product})", highlight=False)
