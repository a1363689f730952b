"""`imageci retention`, `imageci pin`, `imageci unpin`: how long versions, their bytes and their results are
kept, and the versions kept whatever the policy says; `imageci scheduler`: pipelines and retention on their
schedules."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from imageci.cli.context import console, handle_errors, print_json


def register(app: typer.Typer) -> None:
    app.command("retention")(retention)
    app.command("pin")(pin)
    app.command("unpin")(unpin)
    app.command("scheduler")(scheduler)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@handle_errors
def retention(name: Annotated[str | None, typer.Argument(help="only this product")] = None,
              dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would go; change nothing")] = False,
              as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Apply each product's retention policy (its definition's `retention` and `keep`; scope admin): testing
    versions that never passed retired, stable ones beyond `keep` retired, inactive ones older than keep_days
    deleted (bytes; the record stays), old logs and results dropped, then every blob nothing references
    deleted. Pinned versions and versions with a run in progress are never touched."""
    from imageci.app.retention import RetentionArgs, RetentionRequest, retention_op
    from imageci.cli.columns import write_columns
    from imageci.cli.sources import source

    report = source().call(retention_op, RetentionArgs(body=RetentionRequest.model_construct(name=name,
                                                                                            dry_run=dry_run)))
    if as_json:
        print_json(report)
        return
    write_columns(("image", "action", "reason"), ((a.image, a.action + (" (dry run)" if dry_run else ""), a.reason)
                                                  for a in report.actions))
    verb = "would be" if dry_run else "were"
    console.print(f"{sum(a.action == 'inactive' for a in report.actions)} version(s) {verb} retired, "
                  f"{sum(a.action == 'deleted' for a in report.actions)} deleted; {report.logs_dropped} log(s) and "
                  f"{report.attempts_removed} result(s) dropped; {len(report.blobs_deleted)} blob(s) "
                  f"({_size(report.bytes_freed)}) {'would be ' if dry_run else ''}deleted", highlight=False)
    for line in report.caches:
        console.print(line, highlight=False)


@handle_errors
def pin(ref: Annotated[str, typer.Argument(help="NAME@VERSION, NAME:CHANNEL")],
        reason: Annotated[str, typer.Option("--reason", help="why it is kept, e.g. 'release 2026.11'")]) -> None:
    """Pin a version (scope promote): never pruned, retired by `keep` or retention, nor deleted; audited."""
    from imageci.app.pins import PinArgs, PinRequest, pin_op
    from imageci.cli.sources import source

    row = source().call(pin_op, PinArgs(ref=ref, body=PinRequest.model_construct(reason=reason)))
    console.print(f"pinned {row.image} ({row.state}): {row.pinned}", highlight=False)


@handle_errors
def unpin(ref: Annotated[str, typer.Argument(help="NAME@VERSION, NAME:CHANNEL")]) -> None:
    """Unpin a version (scope promote): retention applies to it again; audited."""
    from imageci.app.operations import RefArgs
    from imageci.app.pins import unpin_op
    from imageci.cli.sources import source

    row = source().call(unpin_op, RefArgs(ref=ref))
    console.print(f"unpinned {row.image} ({row.state})", highlight=False)


@handle_errors
def scheduler(definitions: Annotated[list[Path] | None, typer.Argument(help="image.yaml files; those with a "
                                                                       "'schedule:' line are kept")] = None,
              retention_cron: Annotated[str | None, typer.Option("--retention", help="also apply retention on this "
                                                                 "cron expression (UTC), e.g. '30 3 * * *'")] = None,
              once: Annotated[bool, typer.Option("--once", help="fire what is due now, then exit (for a systemd "
                                                 "timer or cron)")] = False) -> None:
    """Run each definition's pipeline on its `schedule:` (cron, UTC): rebuilt only when its inputs changed,
    tested, promoted on a green gate; and retention on --retention. Keeps running (Ctrl-C or SIGTERM stops it
    between fires); --once exits with the highest exit code of what it fired (0: nothing was due)."""
    import time

    from imageci.app import schedules
    from imageci.app.session import Session
    from imageci.errors import UsageError
    from imageci.store.states import utcnow

    session = Session.open()
    paths = list(definitions or [])
    entries = schedules.entries(paths, retention_cron)
    if not once:
        now = utcnow()
        for e in entries:
            console.print(f"scheduled {e.key} ({e.cron}): next at {schedules.next_time(e.cron, now):%Y-%m-%d %H:%M} "
                          "UTC", highlight=False)

    def started(entry: schedules.Entry, when: datetime) -> None:
        console.print(f"{utcnow():%Y-%m-%d %H:%M:%S} firing {entry.key} (due {when:%Y-%m-%d %H:%M})", highlight=False)

    worst = 0
    while True:
        for fired in schedules.tick(session, entries, on_fire=started):
            console.print(f"{utcnow():%Y-%m-%d %H:%M:%S} {fired.key}: exit {fired.exit_code}: {fired.outcome}",
                          highlight=False, markup=False)
            worst = max(worst, fired.exit_code)
        if once:
            raise typer.Exit(worst)
        now = utcnow()
        time.sleep(max(1.0, min(60.0, (schedules.next_due(entries, now) - now).total_seconds())))
        try:
            entries = schedules.entries(paths, retention_cron)  # definitions may have changed
        except UsageError as exc:
            console.print(f"warning: keeping the schedules as they were: {exc}", highlight=False, markup=False)
