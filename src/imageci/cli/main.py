"""The ``imageci`` command: parse, call the application layer (``imageci.app``), print."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from typer.main import get_command_name
from typer.models import OptionInfo
from typer.utils import get_params_from_function

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
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] in ("__all__", "1", "true"):
        _no_plugin_loader()
    end = sys.argv.index("--") if "--" in sys.argv else len(sys.argv)  # a command's own words stay its own
    sys.argv[:end] = [f"{HOLD}={DEFAULT_HOLD}" if a == HOLD else a for a in sys.argv[:end]]
    named_only(app, sys.argv[1:end])(prog_name="imageci")


def _no_plugin_loader() -> None:
    """pydantic's plugin loader, when plugins are off: it finds none then, but its module imports
    ``importlib.metadata`` (10 ms of every command, for a name it does not call)."""
    import sys
    import types

    loader = types.ModuleType("pydantic.plugin._loader")
    loader.get_plugins = tuple  # type: ignore[attr-defined]  # no plugins: what the real one returns when off
    sys.modules.setdefault("pydantic.plugin._loader", loader)


def named_only(root: typer.Typer, words: Sequence[str]) -> typer.Typer:
    """``root`` holding only the command or group that ``words`` name. Typer makes a click command of every
    registered command (its signature, annotations, parameters) before it parses a word: a third of a quick
    command's start. ``root`` itself where the words name none (``--help``, a mistyped name: the whole list and
    its suggestions)."""
    name = command_word(words, valued_options(main))
    commands = [c for c in root.registered_commands
                if (c.name or get_command_name(getattr(c.callback, "__name__", ""))) == name]
    groups = [g for g in root.registered_groups if g.name == name]
    if not commands and not groups:
        return root
    only = copy.copy(root)
    only.registered_commands, only.registered_groups = commands, groups
    return only


def command_word(words: Sequence[str], valued: set[str]) -> str | None:
    """The command's name in ``words`` (the main options first: ``valued`` are those that take a value), or None
    where no word names one before ``--`` or after ``--help``."""
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in ("--", "--help"):
            return None
        elif word.startswith("-"):
            skip = word in valued
        else:
            return word
    return None


def valued_options(callback: Callable[..., Any]) -> set[str]:
    """The option names of ``callback``'s parameters that take a value (every type but a bool flag), as Typer
    reads them."""
    names: set[str] = set()
    for name, param in get_params_from_function(callback).items():
        info = param.default
        if isinstance(info, OptionInfo) and param.annotation is not bool:
            declared = [d for d in info.param_decls or () if d.startswith("-")]
            names.update(declared or [f"--{name.replace('_', '-')}"])
    return names


DEFAULT_HOLD = "1h"

if __name__ == "__main__":
    entry()
