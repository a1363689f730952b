"""`imageci worker` (run jobs for a server) and `imageci workers` (who is live, what they offer and run)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from imageci.cli.context import console, err_console, handle_errors, print_json

if TYPE_CHECKING:
    from imageci.config import Settings

BrokerOpt = Annotated[str | None, typer.Option("--broker", metavar="URL", help="the Celery broker and result "
                                               "backend, redis://HOST:PORT/DB (default: $IMAGECI_BROKER_URL)")]


def _settings(broker: str | None) -> Settings:
    from dataclasses import replace

    from imageci.config import BROKER_SCHEMES, Settings, url_of
    from imageci.errors import UsageError

    settings = Settings.load()
    if broker is not None:
        try:
            url_of(BROKER_SCHEMES)(broker)
        except ValueError:
            raise UsageError("--broker must be a redis://HOST[:PORT][/DB] or rediss:// URL") from None
        settings = replace(settings, broker_url=broker)
    if not settings.broker_url:
        raise UsageError("no broker: pass --broker redis://HOST:PORT/DB or set IMAGECI_BROKER_URL")
    return settings


def register(app: typer.Typer) -> None:
    app.command()(worker)
    app.command()(workers)


@handle_errors
def worker(server: Annotated[str | None, typer.Option("--server", metavar="URL", help="the imageci server whose "
                                                      "jobs to run (default: imageci --server, $IMAGECI_SERVER, "
                                                      "then `imageci login`'s)")] = None,
           token: Annotated[str | None, typer.Option("--token", help="its API token, scope test + read (default: "
                                                     "$IMAGECI_TOKEN, then the login's; prefer those: a command "
                                                     "line is visible to the host's other users)")] = None,
           capabilities: Annotated[str | None, typer.Option("--capabilities", metavar="WORDS", help="only these "
                                                            "of what the host offers, comma-separated: testbeds, "
                                                            "arch:ARCH, kvm, gpu (e.g. sandbox,arch:arm64)")]
           = None,
           concurrency: Annotated[int | None, typer.Option("-c", "--concurrency", min=1, help="jobs at once "
                                                           "(default: $IMAGECI_JOBS, else cores)")] = None,
           broker: BrokerOpt = None,
           loglevel: Annotated[str, typer.Option("--loglevel", help="Celery's log level")] = "WARNING") -> None:
    """Run jobs for a server until SIGTERM (running jobs finish first): a Celery worker that takes the jobs
    whose testbed, architecture and needs (gpu, kvm) this host offers, fetches each image by digest and
    records each attempt through the server's API. Leftovers of a killed worker of this home are removed
    first."""
    from dataclasses import replace

    from imageci.app.workers import prepare
    from imageci.cli import sources
    from imageci.client.remote import Remote, find_remote
    from imageci.errors import UsageError
    from imageci.worker.process import run_worker

    settings = _settings(broker)
    if token is not None:
        settings = replace(settings, token=token)
    remote = find_remote(server or sources.server_option, settings)
    if remote is None:
        raise UsageError("a worker serves a server: pass --server URL (or set IMAGECI_SERVER, or `imageci login`)")
    if not remote.token:
        raise UsageError(f"no token for {remote.url}: pass --token, set IMAGECI_TOKEN or `imageci login`")
    words = [w.strip() for w in (capabilities or "").split(",") if w.strip()]
    settings.ensure()
    done, offer = prepare(settings, words)
    for line in done:
        err_console.print(f"gc: {line}", highlight=False)
    jobs = concurrency or settings.jobs
    err_console.print(f"imageci worker for {remote.url}: {', '.join(offer.words)}; {jobs} job(s) at once "
                      f"({len(offer.queues())} queues: `imageci workers --json` lists them)", highlight=False)
    raise typer.Exit(run_worker(settings, Remote(remote.url, remote.token), offer.queues(), jobs,
                                loglevel.upper()))


@handle_errors
def workers(broker: BrokerOpt = None,
            timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="seconds to wait for answers")] = 1.0,
            as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The live workers: name, capabilities, the jobs each runs now."""
    from imageci.app.workers import live_workers
    from imageci.cli.columns import write_columns

    rows = live_workers(_settings(broker), timeout)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no live workers")
        return
    write_columns(("worker", "capabilities", "jobs"),
                  ((r.name, ",".join(r.capabilities), "; ".join(r.jobs) or "-") for r in rows))
