"""The ``imageci`` command: parse, call the application layer (``imageci.app``), print."""

from __future__ import annotations

from typing import Annotated

import typer

from imageci import __version__
from imageci.cli import (
    backups,
    building,
    cisystems,
    compliance,
    consumers,
    debugging,
    fleet,
    inventory,
    investigate,
    knownfailures,
    quarantine,
    repro,
    retention,
    running,
    serving,
    upkeep,
    versions,
    vulns,
)
from imageci.cli.context import console, show_warnings

app = typer.Typer(help="Continuous integration for OS and container images.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)


def _version_cb(value: bool) -> None:
    if value:
        console.print(f"imageci {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version_cb, is_eager=True)] = False,
         server: Annotated[str | None, typer.Option("--server", metavar="URL", help="an imageci server to "
                                                    "ask (default: $IMAGECI_SERVER, then `imageci login`'s)")]
         = None) -> None:
    """imageci: build → testing → fresh-sandbox tests → recorded verdicts → gated promotion."""
    from imageci.cli import sources

    sources.server_option = server
    show_warnings()


# Each module registers its commands; they import what they use when they run, so `imageci --version`
# and the queries start fast.
building.register(app)
running.register(app)
versions.register(app)
fleet.register(app)
serving.register(app)
cisystems.register(app)
upkeep.register(app)
quarantine.register(app)
consumers.register(app)
retention.register(app)
inventory.register(app)
vulns.register(app)
compliance.register(app)
repro.register(app)
investigate.register(app)
knownfailures.register(app)
backups.register(app)
debugging.register(app)

HOLD = "--hold-on-failure"


def entry() -> None:
    """The ``imageci`` command: ``--hold-on-failure`` alone means its default duration (the option's value is
    optional, ``--hold-on-failure=DURATION``), then the commands above."""
    import os
    import sys

    # pydantic looks through every installed distribution for plugins (observability hooks such as logfire) the
    # first time it builds a model: a tenth of a quick command's time. imageci uses none; the variable set
    # empty in the environment lets them load.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    end = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)  # a command's own words stay its own
    sys.argv[:end] = [f"{HOLD}={DEFAULT_HOLD}" if a == HOLD else a for a in sys.argv[:end]]
    app(prog_name="imageci")


DEFAULT_HOLD = "1h"

if __name__ == "__main__":
    entry()
