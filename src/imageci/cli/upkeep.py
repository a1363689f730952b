"""Looking after a home (or a server's): `verify`, `doctor`, `gc`."""

from __future__ import annotations

from typing import Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json

app = typer.Typer()  # the commands are added to the main app by register()


def register(main: typer.Typer) -> None:
    main.registered_commands.extend(app.registered_commands)


@app.command()
@handle_errors
def verify() -> None:
    """Re-hash every blob in the artifact store, and compare every unpacked rootfs and VM disk
    with what it was made from; exit 7 if anything is corrupt (changed caches are discarded)."""
    from rich.markup import escape

    from imageci.app.operations import NoArgs
    from imageci.app.upkeep import verify_op
    from imageci.cli.sources import source
    from imageci.exitcodes import ExitCode

    out = source().call(verify_op, NoArgs())
    for digest in out.corrupt:
        err_console.print(f"[red]corrupt[/] sha256:{digest}", highlight=False)
    for line in out.changed:
        err_console.print(f"[red]changed[/] {escape(line)}", highlight=False)
    console.print(f"verified {out.blobs} blob(s): {len(out.corrupt)} corrupt; {out.caches} cache(s): "
                  f"{len(out.changed)} changed")
    if not out.ok:
        raise typer.Exit(int(ExitCode.STORE_CORRUPT))


@app.command()
@handle_errors
def doctor(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """What this host can run (builder, sandbox, podman, qemu + KVM, ssh) and why not; with a server,
    whether it is ready and takes the token. Exit 0 when the embedded defaults (build + sandbox) work
    (and the server answers), 3 when they do not."""
    from rich.markup import escape
    from rich.table import Table

    from imageci.app import upkeep as app_upkeep
    from imageci.app.session import Session
    from imageci.cli.sources import remote_client
    from imageci.exitcodes import ExitCode

    session = Session.open()
    findings = app_upkeep.doctor(session)
    client = remote_client(session.settings)
    if client is not None:  # runs against it happen here, so this host's findings still count
        from imageci.testbeds.hostcheck import Finding

        ready, detail = client.readiness()
        findings.append(Finding("server", client.remote.url, ready, detail, required=True))
    if as_json:
        print_json([f.__dict__ for f in findings])
    else:
        table = Table("area", "check", "", "detail")
        for f in findings:
            mark = "[green]ok[/]" if f.ok else ("[red]MISSING[/]" if f.required else "[yellow]no[/]")
            table.add_row(f.area, f.name, mark, escape(f.detail))
        console.print(table)
    if not all(f.ok for f in findings if f.required):
        raise typer.Exit(int(ExitCode.ERROR))


@app.command()
@handle_errors
def gc(force: Annotated[bool, typer.Option("--force", help="even while another imageci runs: remove only what "
                                             "dead processes left")] = False) -> None:
    """Remove what a crashed or killed imageci left behind: sandboxes and their
    mounts, disks, VMs, containers, build directories, cgroups; mark its runs aborted.
    Only this home's resources, and only those no live imageci holds. Also blobs no
    version or log references, once an hour old (uploads never committed). Caches over their
    budget (IMAGECI_CACHE_BUDGET) are trimmed, least recently used first, while no other imageci
    uses the home."""
    from imageci.app.upkeep import GcArgs, gc_op
    from imageci.cli.sources import source

    out = source().call(gc_op, GcArgs(force=force))
    for line in [*out.removed, *out.caches]:
        console.print(line, highlight=False)
    kept = f"; kept what {out.live} live imageci process(es) hold" if out.live else ""
    console.print(f"{len(out.removed)} leftover(s) removed{kept}")
