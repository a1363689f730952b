"""DEP-8 test control files (``debian/tests/control``), parsed with line numbers.

Each paragraph names tests (``Tests:`` files in ``Tests-Directory``, default
``debian/tests``) or one inline ``Test-Command:``, with ``Depends``,
``Restrictions``, ``Features``, ``Architecture`` and ``Classes``. Syntax
errors and paragraphs that break the spec are reported as file:line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from debian.deb822 import Deb822

from imageci.errors import SourceError

FIELD_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*):(.*)$")
KNOWN_FIELDS = {"tests", "test-command", "restrictions", "features", "depends", "tests-directory", "classes",
                "architecture"}


@dataclass(frozen=True)
class Dep8Test:
    name: str
    path: str | None  # relative to the source tree; None for Test-Command
    command: str | None
    depends: str
    restrictions: tuple[str, ...]
    features: tuple[str, ...]
    architecture: tuple[str, ...]
    control: Path
    line: int


@dataclass
class Dep8Suite:
    source: str  # the source package name (debian/control)
    root: Path  # the source tree
    binaries: list[str] = field(default_factory=list)
    build_depends: list[str] = field(default_factory=list)
    tests: list[Dep8Test] = field(default_factory=list)


def _paragraphs(path: Path) -> list[tuple[int, dict[str, str], dict[str, int]]]:
    """(first line, fields, field lines) per paragraph; strict about syntax."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SourceError(str(path), None, "file not found") from exc
    except UnicodeDecodeError as exc:
        raise SourceError(str(path), None, f"not UTF-8: {exc}") from exc
    out: list[tuple[int, dict[str, str], dict[str, int]]] = []
    chunk: list[str] = []
    start = 0
    lines: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines() + [""], start=1):
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if chunk:
                fields = {k.lower(): v for k, v in Deb822(chunk).items()}
                out.append((start, {k: " ".join(v.split()) for k, v in fields.items()}, lines))
            chunk, lines = [], {}
            continue
        if raw[0] in " \t":
            if not chunk:
                raise SourceError(str(path), lineno, "continuation line outside a field")
        else:
            m = FIELD_RE.match(raw)
            if not m:
                raise SourceError(str(path), lineno, f"not a 'Field: value' line: {raw.strip()[:60]!r}")
            name = m.group(1).lower()
            if name in lines:
                raise SourceError(str(path), lineno, f"field {m.group(1)} appears twice in one paragraph")
            lines[name] = lineno
            if not chunk:
                start = lineno
        chunk.append(raw)
    return out


def _words(value: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s,]+", value) if w)


def _test_name(features: tuple[str, ...], control: Path, line: int) -> str | None:
    """The ``test-name=NAME`` feature: how autopkgtest names a Test-Command test."""
    names = []
    for feature in features:
        key, eq, value = feature.partition("=")
        if key != "test-name":
            continue
        if not eq or not value:
            raise SourceError(str(control), line, "the test-name feature needs a value (test-name=NAME)")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9+._-]*", value):
            raise SourceError(str(control), line, f"test-name {value!r} is not a valid test name")
        names.append(value)
    if len(names) > 1:
        raise SourceError(str(control), line, "only one test-name feature is allowed per paragraph")
    return names[0] if names else None


def load_dep8(root: Path) -> Dep8Suite:
    """The DEP-8 suite of an unpacked source tree."""
    root = root.resolve()
    control = root / "debian" / "tests" / "control"
    if not control.exists():
        raise SourceError(str(control), None, "no DEP-8 test control file in this source tree")
    suite = Dep8Suite(source=root.name, root=root)
    src_control = root / "debian" / "control"
    if src_control.exists():
        paras = _paragraphs(src_control)
        if paras:
            suite.source = paras[0][1].get("source", root.name)
            for key in ("build-depends", "build-depends-indep", "build-depends-arch"):
                if paras[0][1].get(key):
                    suite.build_depends.append(paras[0][1][key])
            # udebs (and other non-deb package types) are not installable: autopkgtest leaves them out of @
            suite.binaries = [p[1]["package"] for p in paras[1:] if "package" in p[1]
                              and p[1].get("package-type", "deb") == "deb"
                              and p[1].get("xc-package-type", "deb") == "deb"]
    seen: set[str] = set()
    commands = 0
    for start, fields, lines in _paragraphs(control):
        unknown = sorted(set(fields) - KNOWN_FIELDS)
        if unknown:  # DEP-8: an unknown field makes the stanza unusable; say so where it is
            raise SourceError(str(control), lines[unknown[0]], f"unknown field {unknown[0]!r}")
        has_tests, has_cmd = "tests" in fields, "test-command" in fields
        if has_tests == has_cmd:
            raise SourceError(str(control), start, "a paragraph needs exactly one of Tests: or Test-Command:")
        features = _words(fields.get("features", ""))
        common = dict(depends=fields.get("depends", "@"), restrictions=_words(fields.get("restrictions", "")),
                      features=features, architecture=_words(fields.get("architecture", "")), control=control)
        named = _test_name(features, control, lines.get("features", start))
        if named is not None and has_tests:
            raise SourceError(str(control), lines["features"], "the test-name feature is only allowed with "
                              "Test-Command (Tests: names its tests already)")
        if has_cmd:
            if named is None:
                commands += 1  # autopkgtest numbers the unnamed ones only
            name = named or f"command{commands}"
            if name in seen:
                raise SourceError(str(control), lines.get("features", start), f"test {name!r} is declared twice")
            seen.add(name)
            suite.tests.append(Dep8Test(name=name, path=None, command=fields["test-command"],
                                        line=lines["test-command"], **common))  # type: ignore[arg-type]
            continue
        directory = fields.get("tests-directory", "debian/tests")
        for name in _words(fields["tests"]):
            if name in seen:
                raise SourceError(str(control), lines["tests"], f"test {name!r} is declared twice")
            seen.add(name)
            if not (root / directory / name).is_file():
                raise SourceError(str(control), lines["tests"], f"test {name!r} is declared but {directory}/{name} "
                                  "does not exist in the source tree")
            suite.tests.append(Dep8Test(name=name, path=f"{directory}/{name}", command=None,
                                        line=lines["tests"], **common))  # type: ignore[arg-type]
    return suite


def fetch_source(package: str, cache_dir: Path) -> Path:
    """The unpacked source tree of a Debian source package (``apt-get source``,
    deb-src must be enabled), fetched once into ``cache_dir``."""
    import fcntl
    import shutil
    import subprocess
    import tempfile

    from imageci.errors import HostSetupError, UsageError

    if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", package):
        raise UsageError(f"not a Debian source package name: {package!r}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    done = cache_dir / f"{package}.tree"
    with open(cache_dir / f"{package}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file() and Path(done.read_text()).is_dir():
            return Path(done.read_text())
        if not shutil.which("dpkg-source"):
            raise HostSetupError("dpkg-source is not installed: run scripts/host-setup.sh (dpkg-dev)")
        work = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{package}-"))
        res = subprocess.run(["apt-get", "source", "--download-only", "-qq", package], cwd=work,
                             capture_output=True, text=True)
        if res.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            hint = " (is deb-src enabled? scripts/host-setup.sh does it)" if "deb-src" in res.stderr or \
                "source" in res.stderr.lower() else ""
            raise UsageError(f"apt-get source {package} failed{hint}: {res.stderr.strip()[-300:]}")
        dsc = next(work.glob("*.dsc"))
        tree = cache_dir / dsc.stem
        shutil.rmtree(tree, ignore_errors=True)
        subprocess.run(["dpkg-source", "--no-check", "-x", str(dsc), str(tree)], cwd=work, check=True,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
        done.write_text(str(tree))
        return tree
