"""The code's shape, held: layers import downward only, policy decides from what it is given, every
package says what it holds, and no module or function outgrows what one reader takes in (modules ≤ 400
lines, functions ≤ 60, tests and benchmarks included). Each failure lists every offender."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src" / "imageci"
MAX_MODULE, MAX_FUNCTION = 400, 60

# Lower ranks are imported by higher ones, never the other way (docs/architecture.md draws them).
RANK = {"(base)": 0, "definitions": 1, "store": 2, "formats": 3, "supply": 3, "build": 4, "testbeds": 4,
        "checks": 5, "engine": 6, "policy": 7, "reports": 7, "app": 8, "server": 9, "client": 10,
        "api": 11, "web": 11, "feeds": 11, "worker": 11, "cli": 12}
SIDEWAYS = {("api", "web"), ("api", "feeds")}  # the API assembles the whole server: its routers, feeds, pages


def _package(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else "(base)"


def _imported(tree: ast.AST) -> set[str]:
    """Every ``imageci.*`` module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "imageci":
            names = [node.module] if node.module != "imageci" else [f"imageci.{a.name}" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "imageci")
    return found


def _target(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (SRC / parts[1]).is_dir() else "(base)"


def _sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def test_layers_import_downward_only() -> None:
    upward = []
    for path in _sources():
        mine = _package(path)
        assert mine in RANK, f"{path}: package {mine!r} has no place in the layers (RANK)"
        for module in sorted(_imported(ast.parse(path.read_text()))):
            theirs = _target(module)
            if theirs != mine and RANK[theirs] >= RANK[mine] and (mine, theirs) not in SIDEWAYS:
                upward.append(f"{path.relative_to(REPO)} ({mine}) imports {module} ({theirs})")
    assert upward == [], "imports that do not point downward:\n" + "\n".join(upward)


def test_policy_decides_from_evidence_passed_in() -> None:
    """No catalog, no ORM, no database in ``policy/``: its rules are tested without one."""
    reaching = []
    for path in sorted((SRC / "policy").glob("*.py")):
        tree = ast.parse(path.read_text())
        for module in _imported(tree):
            if module.startswith("imageci.store") and module != "imageci.store.states":
                reaching.append(f"{path.name}: {module}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if name and name.split(".")[0] == "sqlalchemy":
                    reaching.append(f"{path.name}: {name}")
    assert reaching == []


def test_every_package_says_what_it_holds() -> None:
    silent = []
    for d in sorted(p for p in SRC.rglob("*") if p.is_dir() and any(p.glob("*.py")) and "migrations" not in p.parts):
        init = d / "__init__.py"
        if not init.exists() or not ast.get_docstring(ast.parse(init.read_text())):
            silent.append(str(d.relative_to(REPO)))
    assert silent == [], "packages without an __init__.py docstring: " + ", ".join(silent)


def _sizes(roots: list[Path]) -> tuple[list[str], list[str]]:
    modules, functions = [], []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "migrations" in path.parts or ".mypy_cache" in path.parts:
                continue
            text = path.read_text()
            if text.count("\n") > MAX_MODULE:
                modules.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > MAX_FUNCTION:
                        functions.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    return modules, functions


def test_no_module_or_function_outgrows_its_reader() -> None:
    modules, functions = _sizes([SRC, REPO / "tests", REPO / "bench"])
    assert modules == [], f"modules over {MAX_MODULE} lines:\n" + "\n".join(modules)
    assert functions == [], f"functions over {MAX_FUNCTION} lines:\n" + "\n".join(functions)


def test_the_size_check_finds_what_outgrew(tmp_path: Path) -> None:
    """The check itself: a long module and a long function are named, with their sizes."""
    (tmp_path / "big.py").write_text("def long() -> None:\n" + "    x = 1\n" * 70 + "\n" * 400)
    (tmp_path / "small.py").write_text("def short() -> None:\n    pass\n")
    global REPO
    saved, REPO = REPO, tmp_path.parent
    try:
        modules, functions = _sizes([tmp_path])
    finally:
        REPO = saved
    assert [m.split(": ")[1] for m in modules] == ["471 lines"]
    assert [f.split(" ", 1)[1] for f in functions] == ["long: 71 lines"]
