"""`imageci compliance`: a version's OpenSCAP evaluation (on this home, or on the server)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json
from imageci.errors import UsageError

if TYPE_CHECKING:
    from imageci.app.compliance import ComplianceReport


def register(main: typer.Typer) -> None:
    main.command("compliance")(compliance)


@handle_errors
def compliance(ref: Annotated[str, typer.Argument(help="NAME@SERIAL, NAME:CHANNEL or NAME@sha256:DIGEST")],
               content: Annotated[Path | None, typer.Option("--content", help="an XCCDF file or SCAP source data "
                                                            "stream (default: imageci's Debian 12 baseline)")]
               = None,
               profile: Annotated[str | None, typer.Option("--profile", help="the profile to evaluate (default: "
                                                           "the baseline's)")] = None,
               as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Evaluate a version's root file system offline with OpenSCAP (oscap-chroot): the score and each
    rule's result. The built-in content's evaluation is stored with the version."""
    from imageci.app.compliance import ComplianceArgs, compliance_op
    from imageci.cli.sources import source

    found = local_report(ref, content, profile) if content else source().call(
        compliance_op, ComplianceArgs(ref=ref, profile=profile))
    if as_json:
        print_json(found)
        return
    from rich.table import Table

    table = Table(title=f"{found.image}: score {found.score:.1f}/{found.maximum:g} ({found.content}, "
                        f"{found.profile or 'default profile'})", title_justify="left", box=None)
    for column in ("RESULT", "SEVERITY", "RULE", "ID"):
        table.add_column(column, overflow="fold")
    for r in found.rules:
        table.add_row(r.result, r.severity, r.title, r.id)
    console.print(table, highlight=False, markup=False)


def local_report(ref: str, content: Path, profile: str | None) -> ComplianceReport:
    """An evaluation with a content file of this machine: on this home only (a server evaluates its
    built-in content)."""
    from imageci.app import compliance
    from imageci.app.session import Session
    from imageci.cli.sources import server_option
    from imageci.client.remote import find_remote
    from imageci.config import Settings

    if find_remote(server_option, Settings.load()) is not None:
        raise UsageError("--content evaluates a file of this machine: run it without a server (the server "
                         "evaluates its built-in content)")
    return compliance.report(Session.open(), ref, content=content, profile=profile)
