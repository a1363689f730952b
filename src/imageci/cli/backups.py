"""`imageci backup` and `imageci restore`: a home's catalog and blobs, copied while it runs, put back into an
empty home."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json
from imageci.exitcodes import ExitCode


def register(main: typer.Typer) -> None:
    main.command("backup")(backup)
    main.command("restore")(restore)


def _incomplete(missing: list[str], corrupt: list[str]) -> None:
    for digest in missing:
        err_console.print(f"missing: blob sha256:{digest} (the catalog references it)", highlight=False)
    for digest in corrupt:
        err_console.print(f"corrupt: blob sha256:{digest} (its bytes do not match its digest; not copied)",
                          highlight=False)


@handle_errors
def backup(dest: Annotated[Path, typer.Argument(help="a new (or empty) directory")],
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Copy this home's catalog (consistent as of one transaction, while the server and runs go on: SQLite's
    online backup, or pg_dump) and every blob it references into DEST. Exit 0: complete; 7: a referenced
    blob is missing or damaged (named)."""
    from imageci.app.backups import backup as do_backup
    from imageci.app.session import Session

    report = do_backup(Session.open(), dest)
    if as_json:
        print_json(report)
    else:
        console.print(f"backed up the {report.catalog} catalog (schema {report.revision}) and {report.blobs} blob(s), "
                      f"{report.bytes / 1e6:.1f} MB, to {report.path}", highlight=False, soft_wrap=True)
    _incomplete(report.missing, report.corrupt)
    raise typer.Exit(0 if report.complete else int(ExitCode.STORE_CORRUPT))


@handle_errors
def restore(source: Annotated[Path, typer.Argument(help="a directory `imageci backup` wrote")],
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Restore a backup into this home, whose catalog must be empty: the catalog (migrated to this imageci's
    schema), then its blobs, each checked against its digest. Exit 0: complete; 7: a blob the catalog
    references is in neither the backup nor the store, or damaged in the backup (named)."""
    from imageci.app.backups import restore as do_restore
    from imageci.app.session import Session

    report = do_restore(Session.open(), source)
    if as_json:
        print_json(report)
    else:
        console.print(f"restored {report.versions} version(s) and {report.blobs} blob(s) from {report.source}",
                      highlight=False, soft_wrap=True)
    _incomplete(report.missing, report.corrupt)
    raise typer.Exit(0 if report.complete else int(ExitCode.STORE_CORRUPT))
