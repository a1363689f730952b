"""`imageci bom` and `imageci diff`: what is in a version, and what changed between two (on this
home, or on the server)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from imageci.cli.context import console, handle_errors, print_json
from imageci.supply.forms import BomFormat

RefArg = Annotated[str, typer.Argument(help="NAME@SERIAL, NAME:CHANNEL or NAME@sha256:DIGEST")]


def register(main: typer.Typer) -> None:
    main.command("bom")(bom)
    main.command("diff")(diff)


def _write(doc: dict[str, Any], output: Path | None) -> None:
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text)
    tmp.replace(output)


@handle_errors
def bom(ref: RefArg,
        form: Annotated[BomFormat, typer.Option("--format", "-f", help="table (for reading), json (imageci's), "
                                                "spdx (SPDX 2.3 JSON) or cyclonedx (CycloneDX 1.6 JSON)")]
        = BomFormat.TABLE,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="write the document to this file "
                                                    "(default: standard output)")] = None) -> None:
    """The packages installed in a version (dpkg, apk, rpm), read from its root file system without
    running it: name, version, architecture, source package, licenses, package URL."""
    from imageci.app.inventory import BomArgs, bom_op
    from imageci.cli.sources import source

    doc = source().call(bom_op, BomArgs(ref=ref, format=BomFormat.JSON if form == BomFormat.TABLE else form))
    if form != BomFormat.TABLE:
        _write(doc, output)
        return
    distro = doc.get("distro") or {}
    from rich.table import Table

    table = Table(title=f"{doc['image']}: {len(doc['packages'])} packages"
                        + (f" ({distro.get('pretty_name') or distro.get('id')})" if distro else ""),
                  title_justify="left", box=None)
    for column in ("NAME", "VERSION", "ARCH", "SOURCE", "LICENSES", "PURL"):
        table.add_column(column, overflow="fold")
    for p in doc["packages"]:
        source_text = p["source"] if p["source_version"] == p["version"] else f"{p['source']} {p['source_version']}"
        table.add_row(p["name"], p["version"], p["arch"], source_text, ", ".join(p["licenses"]), p["purl"])
    console.print(table, highlight=False, markup=False)
    for warning in doc.get("warnings", []):
        console.print(f"warning: {warning}", highlight=False, markup=False)


@handle_errors
def diff(before: Annotated[str, typer.Argument(help="the older version (NAME@SERIAL, NAME:CHANNEL, …)")],
         after: Annotated[str, typer.Argument(help="the newer version")],
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What changed from BEFORE to AFTER: packages added, removed, upgraded and downgraded, and files
    changed outside package management (path, size, mode, sha256)."""
    from imageci.app.inventory import DiffArgs, diff_op
    from imageci.cli.sources import source

    changes = source().call(diff_op, DiffArgs.model_construct(before=before, after=after))
    if as_json:
        print_json(changes)
        return
    out = console.print
    out(f"{changes.before} → {changes.after}", highlight=False, markup=False)
    if not changes.packages and not changes.files:
        out("no package or file changed", highlight=False)
        return
    for p in changes.packages:
        what = {"added": f"+ {p.name} {p.after}", "removed": f"- {p.name} {p.before}"}.get(
            p.change, f"~ {p.name} {p.before} → {p.after} ({p.change})")
        out(f"  package {what}" + (f" [{p.arch}]" if p.arch else ""), highlight=False, markup=False)
    for f in changes.files:
        parts = []
        if f.before is not None and f.after is not None:
            if f.before.mode != f.after.mode:
                parts.append(f"mode {f.before.mode:o} → {f.after.mode:o}")
            if f.before.size != f.after.size:
                parts.append(f"size {f.before.size} → {f.after.size}")
            if f.before.sha256 != f.after.sha256:
                parts.append(f"sha256 {f.before.sha256[:12]} → {f.after.sha256[:12]}")
        entry = f.after or f.before
        owner = f" (file of {entry.owner})" if entry is not None and entry.owner else ""
        sign = {"added": "+", "removed": "-", "changed": "~"}[f.change]
        out(f"  file {sign} {f.path}{owner}" + (f": {', '.join(parts)}" if parts else ""), highlight=False,
            markup=False)
    if changes.files_by_packages:
        out(f"  ({changes.files_by_packages} file change(s) come with the package changes above)", highlight=False)
