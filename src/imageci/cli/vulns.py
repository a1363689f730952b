"""`imageci vulndb import|list` and `imageci vulns`: vulnerability feeds from files, and a version's
known vulnerabilities (on this home, or on the server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json

vulndb_app = typer.Typer(help="Vulnerability feeds imported from files you provide: the Debian Security Tracker's "
                         "JSON, OSV records (Debian ecosystems). Nothing is fetched at run time.",
                         no_args_is_help=True)


def register(main: typer.Typer) -> None:
    main.add_typer(vulndb_app, name="vulndb")
    main.command("vulns")(vulns)


@vulndb_app.command("import")
@handle_errors
def import_(file: Annotated[Path, typer.Argument(help="the feed: tracker JSON, an OSV record, a list of them, or a "
                                                "zip of them")],
            name: Annotated[str | None, typer.Option("--name", help="the feed's name (default: its format, "
                                                     "debian-tracker or osv); importing a name again replaces it")]
            = None,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Import a vulnerability feed in one transaction, replacing the feed of the same name."""
    from imageci.cli.sources import source

    done = source().vulndb_import(file, name)
    if as_json:
        print_json(done)
        return
    for warning in done.warnings:
        console.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"imported {done.records} record(s) as feed {done.name} ({done.format}, sha256:{done.sha256[:12]})"
                  + (f"; {done.skipped} left out" if done.skipped else ""), highlight=False, markup=False)


@vulndb_app.command("list")
@handle_errors
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The imported feeds: name, format, file, records, when and by whom."""
    from imageci.app.operations import NoArgs
    from imageci.app.vulns import vulndb_op
    from imageci.cli.sources import source

    rows = source().call(vulndb_op, NoArgs())
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None)
    for column in ("NAME", "FORMAT", "FILE", "RECORDS", "LEFT OUT", "IMPORTED", "BY"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.name, r.format, r.source, str(r.records), str(r.skipped), r.imported, r.by)
    console.print(table, highlight=False, markup=False)


@handle_errors
def vulns(ref: Annotated[str, typer.Argument(help="NAME@SERIAL, NAME:CHANNEL or NAME@sha256:DIGEST")],
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A version's known vulnerabilities from the imported feeds: id, severity, source package and
    the installed packages built from it, installed and fixed version. Most severe first."""
    from imageci.app.operations import RefArgs
    from imageci.app.vulns import vulns_op
    from imageci.cli.sources import source

    found = source().call(vulns_op, RefArgs(ref=ref))
    if as_json:
        print_json(found)
        return
    if not found.feeds:
        console.print("no vulnerability feed imported (imageci vulndb import FILE)", highlight=False)
    from rich.table import Table

    table = Table(title=f"{found.image}: {len(found.findings)} known vulnerabilit"
                        f"{'y' if len(found.findings) == 1 else 'ies'} ({', '.join(found.releases) or 'no release'})",
                  title_justify="left", box=None)
    for column in ("ID", "SEVERITY", "PACKAGE", "INSTALLED", "FIXED", "BINARIES", "ALIASES"):
        table.add_column(column, overflow="fold")
    for f in found.findings:
        table.add_row(f.id, f.severity, f.package, f.installed, f.fixed or f"none ({f.status})",
                      ", ".join(f.binaries), ", ".join(f.aliases))
    console.print(table, highlight=False, markup=False)
