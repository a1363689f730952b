"""The README fits on a screen and points into docs/, where every command and option of `imageci --help`
is documented, and every relative link of either resolves (to a file, and to a heading when it names one)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from imageci.cli.main import app

from conftest import REPO

DOCS = REPO / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _commands() -> list[tuple[str, list[str]]]:
    """Every command of the --help tree (``imageci token create``) with its long options."""
    found: list[tuple[str, list[str]]] = []

    def walk(command: Any, path: list[str]) -> None:
        ctx = type(command).context_class(command)
        if hasattr(command, "list_commands"):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])
            return
        options = [o for p in command.params if p.param_type_name == "option"
                   for o in (*p.opts, *p.secondary_opts) if o.startswith("--") and o != "--help"]
        found.append((" ".join(path), options))

    walk(typer.main.get_command(app), ["imageci"])
    return found


def _anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_the_readme_fits_on_a_screen_and_points_into_the_manual() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "make run" in readme and "make test" in readme
    linked = {Path(t.split("#")[0]).name for t in LINK.findall(readme) if t.startswith("docs/")}
    assert linked >= {p.name for p in DOCS.glob("*.md")}  # every page of the manual is reachable


def test_every_command_and_option_is_documented() -> None:
    manual = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    commands = _commands()
    assert len(commands) >= 40
    missing = [name for name, _ in commands if f"`{name}" not in manual]
    assert missing == [], f"commands not in docs/: {missing}"
    reference = (DOCS / "commands.md").read_text()
    undocumented = [f"{name} {o}" for name, options in commands for o in options
                    if not re.search(rf"`{re.escape(name)}[^`]*{re.escape(o)}\b", reference)
                    and not re.search(rf"{re.escape(o)}\b", manual)]
    assert undocumented == [], f"options not in docs/: {undocumented}"
    readme = (REPO / "README.md").read_text()
    assert [name for name, _ in commands if f"| `{name}` |" not in readme] == []  # the README's table


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue  # http://, mailto: …
            path, _, fragment = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif fragment and dest.suffix == ".md":
                anchors = {_anchor(line.lstrip("#")) for line in dest.read_text().splitlines()
                           if line.startswith("#")}
                if fragment not in anchors:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
