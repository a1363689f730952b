"""The runtimes a project declares it needs, read from the files people already keep for their
version managers and platforms:

- ``.python-version`` (pyenv): the first version line, e.g. ``3.11`` (any 3.11.x) or ``3.11.2``;
  ``system`` and non-CPython names (``pypy3.10-7.3.12``) declare nothing imageci can check;
- ``runtime.txt`` (Heroku, Render): ``python-3.11.2``;
- ``package.json``: ``engines.node``, an npm semver range (``>=18 <21``, ``^20.1``, ``18.x``);
- ``.tool-versions`` (asdf, mise): ``TOOL VERSION [FALLBACK…]`` lines; the first version counts.

A version written as dotted numbers matches an image runtime whose version starts with the same
numbers (``3.11`` ⊇ ``3.11.2``); an npm range matches as npm's semver says. Bad files are
``file:line`` errors.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from imageci.errors import SourceError

# .tool-versions / asdf plugin names → the runtime imageci knows it as
TOOL_NAMES = {"python": "python", "nodejs": "node", "node": "node", "ruby": "ruby", "golang": "go", "go": "go",
              "java": "java", "perl": "perl", "php": "php"}
FILES = (".python-version", "runtime.txt", "package.json", ".tool-versions")
_DOTTED = re.compile(r"\d+(\.\d+)*")


@dataclass(frozen=True)
class RuntimeConstraint:
    tool: str  # python, node, ruby, go, java, perl, php
    spec: str  # 3.11 | >=18 <21
    kind: Literal["prefix", "npm-range"]
    file: str  # the file's name, relative to the project
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def describe(self) -> str:
        return f"{self.tool} {self.spec}"


@dataclass(frozen=True)
class Declared:
    """What a project declares: its constraints, and lines declaring what imageci cannot check."""

    constraints: list[RuntimeConstraint]
    ignored: list[str]  # "FILE:LINE: why", one per line left out


def _content_lines(text: str) -> list[tuple[int, str]]:
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append((n, line))
    return out


def _python_version(path: Path, constraints: list[RuntimeConstraint], ignored: list[str]) -> None:
    lines = _content_lines(path.read_text(encoding="utf-8", errors="replace"))
    if not lines:
        return
    n, first = lines[0]
    version = first.split()[0]
    if version == "system":
        ignored.append(f"{path.name}:{n}: 'system' names no version")
    elif _DOTTED.fullmatch(version):
        constraints.append(RuntimeConstraint("python", version, "prefix", path.name, n))
    else:
        ignored.append(f"{path.name}:{n}: {version!r} is not a CPython version (pyenv's 3.11 or 3.11.2 are)")


def _runtime_txt(path: Path, constraints: list[RuntimeConstraint], ignored: list[str]) -> None:
    lines = _content_lines(path.read_text(encoding="utf-8", errors="replace"))
    if not lines:
        return
    n, first = lines[0]
    m = re.fullmatch(r"python-(\d+(?:\.\d+)*)", first)
    if m is None:
        raise SourceError(str(path), n, f"expected python-VERSION, e.g. python-3.11.2 (got {first!r})")
    constraints.append(RuntimeConstraint("python", m.group(1), "prefix", path.name, n))


def _line_of_key(text: str, key: str) -> int:
    for n, line in enumerate(text.splitlines(), start=1):
        if f'"{key}"' in line:
            return n
    return 1


def _package_json(path: Path, constraints: list[RuntimeConstraint], ignored: list[str]) -> None:
    import nodesemver

    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(str(path), exc.lineno, f"not JSON: {exc.msg}") from None
    engines = doc.get("engines") if isinstance(doc, dict) else None
    if engines is None:
        return
    if not isinstance(engines, dict):
        raise SourceError(str(path), _line_of_key(text, "engines"), "'engines' must be an object")
    node = engines.get("node")
    if node is None:
        return
    line = _line_of_key(text, "node")
    if not isinstance(node, str) or not node.strip():
        raise SourceError(str(path), line, "'engines.node' must be a semver range, e.g. \">=18 <21\"")
    try:
        nodesemver.make_range(node, loose=True)
    except (ValueError, TypeError):
        raise SourceError(str(path), line, f"'engines.node' is not a semver range: {node!r}") from None
    constraints.append(RuntimeConstraint("node", node.strip(), "npm-range", path.name, line))


def _tool_versions(path: Path, constraints: list[RuntimeConstraint], ignored: list[str]) -> None:
    for n, line in _content_lines(path.read_text(encoding="utf-8", errors="replace")):
        words = line.split()
        if len(words) < 2:
            raise SourceError(str(path), n, f"expected 'TOOL VERSION' (got {line!r})")
        tool, version = words[0], words[1]
        if tool not in TOOL_NAMES:
            ignored.append(f"{path.name}:{n}: imageci does not know which package gives {tool!r}")
        elif not _DOTTED.fullmatch(version):
            ignored.append(f"{path.name}:{n}: {tool} {version!r} is not a version number")
        else:
            constraints.append(RuntimeConstraint(TOOL_NAMES[tool], version, "prefix", path.name, n))


_READERS = {".python-version": _python_version, "runtime.txt": _runtime_txt, "package.json": _package_json,
            ".tool-versions": _tool_versions}


def declared_runtimes(project: Path) -> Declared:
    """The runtime constraints of the project in ``project`` (a directory), file by file."""
    constraints: list[RuntimeConstraint] = []
    ignored: list[str] = []
    for name in FILES:
        path = project / name
        if path.is_file():
            _READERS[name](path, constraints, ignored)
    return Declared(constraints, ignored)
