"""Script test suites: a directory of executables, like CentOS t_functional.

Exit status 0 is a pass, 77 a skip, anything else a failure. Metadata comes
from an optional ``suite.yaml`` next to the scripts, or from header comments
in the first 30 lines of a script::

    # imageci-timeout: 30
    # imageci-tags: network, slow
    # imageci-needs: root
    # imageci-flaky: true
    # imageci-description: resolver config is absent

``suite.yaml`` wins over a header for the same key. Unknown keys are errors
with file:line.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imageci.capabilities import KNOWN, is_known
from imageci.definitions.durations import parse_duration
from imageci.definitions.limits import KEYS as LIMIT_KEYS
from imageci.definitions.limits import LimitPolicy, LimitRule, Limits
from imageci.definitions.yamlsource import load_yaml, validate
from imageci.errors import SourceError
from imageci.sizes import parse_size

SUITE_FILE = "suite.yaml"
QUARANTINE_FILE = "quarantine.yaml"  # flake policy (definitions.quarantine), not a test
HEADER_RE = re.compile(r"^#\s*imageci-([a-z-]+):\s*(.*?)\s*$")
HEADER_LINES = 30
DEFAULT_TIMEOUT = 300


class LimitFields(BaseModel):
    """The limits a test (or a suite's ``limits:`` rule) may declare (``definitions.limits``)."""

    memory: str | int | None = Field(default=None, description="memory limit, e.g. 4G (default 2G)")
    pids: int | None = Field(default=None, gt=0, description="processes and threads at once (default 4096)")
    disk: str | int | None = Field(default=None, description="bytes the test may write, e.g. 10G (default 2G)")
    output: str | int | None = Field(default=None, description="output before the command is stopped (default 1G)")
    log: str | int | None = Field(default=None, description="output kept per attempt, head + tail (default 4M)")

    @field_validator("memory", "disk", "output", "log")
    @classmethod
    def _size(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_size(v)
        return v

    def limits(self) -> Limits:
        return Limits.parse({k: getattr(self, k) for k in LIMIT_KEYS})


class TestMeta(LimitFields):
    __test__ = False
    model_config = ConfigDict(extra="forbid")
    timeout: int | None = Field(default=None, gt=0, description="seconds; the whole process tree is killed")
    tags: list[str] | None = None
    needs: list[str] | None = Field(default=None, description="testbed capabilities the test requires")
    flaky: bool | None = Field(default=None, description="known flaky: a failure is reported, not gating")
    description: str | None = None
    testbeds: list[str] | None = Field(default=None, description="run only on these testbeds (skip elsewhere)")
    destructive: bool | None = Field(default=None, description="breaks its testbed: always gets a new one")


class LimitRuleSpec(LimitFields):
    """``limits:`` in suite.yaml: larger (or smaller) limits for the tests whose id matches."""

    model_config = ConfigDict(extra="forbid")
    test: str = Field(description="glob on test ids, e.g. 'gzip/*' or 'testinfra:*'")

    def rule(self) -> LimitRule:
        return LimitRule(self.test, self.limits())


class BuiltinRef(BaseModel):
    """A built-in check named in suite.yaml, with its options."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str


class MachineChecks(BaseModel):
    """``checks:`` in suite.yaml: the machine's own complaints read around every test (``checks.complaints``)."""

    model_config = ConfigDict(extra="forbid")
    read: bool = Field(default=True, description="read them (kernel warnings, core dumps, failed units, denials)")
    fail_on: list[Literal["oops", "coredump", "failed-unit", "denial"]] = Field(
        default_factory=list, description="kinds of complaint that fail a test that passed (default: reported only)")


class SuiteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    defaults: TestMeta = Field(default_factory=TestMeta)
    tests: dict[str, TestMeta] = Field(default_factory=dict)
    builtins: list[str | BuiltinRef] = Field(default_factory=list, description="built-in checks to run too")
    testbeds: list[str] | None = Field(default=None, description="default testbeds when the command names none")
    fresh: Literal["test", "suite"] = Field(default="test", description="a new testbed per test, or reuse one "
                                            "between non-destructive tests")
    structure: list[str] = Field(default_factory=list, description="container-structure-test files (relative "
                                 "to the suite directory) whose tests belong to the suite")
    testinfra: list[str] = Field(default_factory=list, description="pytest-testinfra modules (relative to the "
                                 "suite directory) whose test functions belong to the suite")
    grace: str | None = Field(default=None, description="new tests only warn for this long after their first run "
                              "(e.g. 7d)")
    investigate: bool = Field(default=False, description="bisect each regression of a run (imageci bisect), within "
                                                         "the run's --investigate-budget")
    limits: list[LimitRuleSpec] = Field(default_factory=list, description="limits for tests by id glob (DEP-8, "
                                        "structure and testinfra tests too)")
    checks: MachineChecks = Field(default_factory=MachineChecks, description="the machine's own complaints around "
                                  "each test")

    @field_validator("grace")
    @classmethod
    def _grace_is_a_duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v


class ScriptTestSpec(BaseModel):
    """One executable of a suite, with its resolved metadata and content digest."""

    model_config = ConfigDict(frozen=True)
    name: str
    path: Path
    executable: bool
    timeout: int
    tags: tuple[str, ...]
    needs: tuple[str, ...]
    flaky: bool
    description: str
    digest: str
    testbeds: tuple[str, ...] = ()
    destructive: bool = False
    limits: Limits = Limits()  # what the test itself declares (header, tests: entry)


class BuiltinUse(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    options: tuple[tuple[str, str], ...] = ()
    line: int = 0


class Suite(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    path: Path
    tests: tuple[ScriptTestSpec, ...]
    builtins: tuple[BuiltinUse, ...] = ()
    testbeds: tuple[str, ...] = ()
    fresh: Literal["test", "suite"] = "test"
    grace: timedelta | None = None
    investigate: bool = False  # bisect each regression of a run
    structure: tuple[Path, ...] = ()
    testinfra: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()  # file:line notes about likely mistakes (not errors)
    limit_rules: tuple[LimitRule, ...] = ()  # defaults: first ("*"), then limits: entries in file order
    complaints: bool = True  # read the machine's own complaints around every test
    fail_on: frozenset[str] = frozenset()  # the kinds of complaint that fail a test that passed

    def limit_policy(self, override: Limits | None = None) -> LimitPolicy:
        return LimitPolicy(rules=self.limit_rules, override=override or Limits())

    def names(self) -> list[str]:
        return [t.name for t in self.tests] + [b.name for b in self.builtins]

    def select(self, names: list[str] | None, also: tuple[str, ...] = ()) -> list[ScriptTestSpec]:
        """Script tests by name (all when None); names of built-ins (and ``also``: the
        checks a built-in group stands for) are accepted and left to the caller."""
        if not names:
            return list(self.tests)
        by_name: dict[str, ScriptTestSpec | None] = {t.name: t for t in self.tests}
        by_name.update({b.name: None for b in self.builtins})
        by_name.update({n: None for n in also})
        missing = [n for n in names if n not in by_name]
        if missing:
            hints = []
            for m in missing:
                close = difflib.get_close_matches(m, by_name, n=3)
                hints.append(f"{m!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            raise SourceError(str(self.path), None, f"no such test in suite: {', '.join(hints)}; "
                              f"available: {', '.join(sorted(by_name))}")
        return [spec for n in names if (spec := by_name[n]) is not None]


def _split_list(v: str) -> list[str]:
    return [x.strip() for x in v.split(",") if x.strip()]


def _read_header(path: Path, lines: dict[str, int] | None = None) -> TestMeta:
    """The ``# imageci-KEY: value`` headers; ``lines`` receives each key's line."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            head = list(itertools.islice(fh, HEADER_LINES))
    except OSError as exc:
        raise SourceError(str(path), None, f"cannot read: {exc}") from exc
    values: dict[str, object] = {}
    for lineno, line in enumerate(head, start=1):
        m = HEADER_RE.match(line)
        if not m:
            continue
        key, raw = m.group(1), m.group(2)
        if key not in TestMeta.model_fields:
            raise SourceError(str(path), lineno, f"unknown header key 'imageci-{key}' "
                              f"(known: {', '.join('imageci-' + k for k in TestMeta.model_fields)})")
        value: object = raw
        if key in ("tags", "needs", "testbeds"):
            value = _split_list(raw)
        elif key in ("flaky", "destructive"):
            if raw.lower() not in ("true", "false", "yes", "no"):
                raise SourceError(str(path), lineno, f"imageci-{key} must be true or false (got {raw!r})")
            value = raw.lower() in ("true", "yes")
        elif key == "pids":
            if not raw.isdigit() or int(raw) <= 0:
                raise SourceError(str(path), lineno, f"imageci-pids must be a positive integer (got {raw!r})")
            value = int(raw)
        elif key in LIMIT_KEYS:
            try:
                parse_size(raw)
            except ValueError as exc:
                raise SourceError(str(path), lineno, f"imageci-{key}: {exc}") from None
        elif key == "timeout":
            if not raw.isdigit() or int(raw) <= 0:
                raise SourceError(str(path), lineno, f"imageci-timeout must be a positive integer (got {raw!r})")
            value = int(raw)
        values[key] = value
        if lines is not None:
            lines[key] = lineno
    return TestMeta.model_validate(values)


def _merge(*metas: TestMeta) -> dict[str, object]:
    out: dict[str, object] = {}
    for m in metas:
        out.update({k: v for k, v in m.model_dump().items() if v is not None})
    return out


def _script_spec(name: str, path: Path, merged: dict[str, object], limits: Limits) -> ScriptTestSpec:
    """One script test: its metadata (defaults, header, suite file merged) and the digest of all it is."""
    meta = TestMeta.model_validate(merged)
    h = hashlib.sha256()
    h.update(path.read_bytes())
    h.update(repr(sorted(merged.items())).encode())
    h.update(b"executable" if os.access(path, os.X_OK) else b"not executable")
    return ScriptTestSpec(name=name, path=path, executable=os.access(path, os.X_OK),
                          timeout=meta.timeout or DEFAULT_TIMEOUT, tags=tuple(meta.tags or ()),
                          needs=tuple(meta.needs or ()), flaky=bool(meta.flaky), description=meta.description or "",
                          testbeds=tuple(meta.testbeds or ()), destructive=bool(meta.destructive), limits=limits,
                          digest=h.hexdigest())


def load_suite(directory: Path) -> Suite:
    directory = directory.resolve()
    if not directory.is_dir():
        raise SourceError(str(directory), None, "suite directory does not exist")
    suite_file = directory / SUITE_FILE
    spec = SuiteFile()
    if suite_file.exists():
        spec = validate(SuiteFile, load_yaml(suite_file))
    modules = _listed_files(spec.testinfra, "testinfra", "testinfra module", directory, suite_file)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name not in (SUITE_FILE, QUARANTINE_FILE)
                   and not (modules and p.resolve() in modules)
                   and not p.name.startswith(".")
                   and not p.name.endswith((".md", ".txt", ".yaml", ".yml", ".json", "~")))
    tests: list[ScriptTestSpec] = []
    seen: dict[str, Path] = {}
    warnings: list[str] = []
    src = load_yaml(suite_file) if suite_file.exists() else None
    for path in files:
        name = path.stem if path.suffix in (".sh", ".py", ".bash") else path.name
        if name in seen:
            raise SourceError(str(path), None, f"test name {name!r} is also used by {seen[name].name}")
        seen[name] = path
        header_lines: dict[str, int] = {}
        header = _read_header(path, header_lines)
        merged = _merge(spec.defaults, header, spec.tests.get(name, TestMeta()))
        warnings += _unknown_needs(header.needs, f"{path}:{header_lines.get('needs')}")
        if src is not None:
            warnings += _unknown_needs((spec.tests.get(name) or TestMeta()).needs,
                                       f"{suite_file}:{src.line_of(('tests', name, 'needs'))}")
        tests.append(_script_spec(name, path, merged, _merge_limits(header, spec.tests.get(name, TestMeta()))))
    unknown = sorted(set(spec.tests) - seen.keys())
    if unknown:
        src = load_yaml(suite_file)
        raise SourceError(str(suite_file), src.line_of(("tests", unknown[0])),
                          f"metadata for a test that does not exist: {unknown[0]!r}", "tests")
    if src is not None:
        warnings += _unknown_needs(spec.defaults.needs, f"{suite_file}:{src.line_of(('defaults', 'needs'))}")
    builtins = _builtins(spec, suite_file, seen)
    return Suite(name=directory.name, path=directory, tests=tuple(tests), builtins=builtins,
                 testbeds=tuple(spec.testbeds or ()), fresh=spec.fresh,
                 grace=parse_duration(spec.grace) if spec.grace else None, investigate=spec.investigate,
                 structure=_listed_files(spec.structure, "structure", "container-structure-test file", directory,
                                         suite_file),
                 testinfra=modules, warnings=tuple(dict.fromkeys(warnings)),
                 limit_rules=_limit_rules(spec), complaints=spec.checks.read, fail_on=frozenset(spec.checks.fail_on))


def _merge_limits(*metas: TestMeta) -> Limits:
    out = Limits()
    for m in metas:
        out = m.limits().over(out)
    return out


def _limit_rules(spec: SuiteFile) -> tuple[LimitRule, ...]:
    """``defaults:`` limits apply to every test of the suite (scripts, built-ins, listed files);
    ``limits:`` entries to the tests whose id matches, later entries winning."""
    rules = []
    defaults = spec.defaults.limits()
    if not defaults.is_empty():
        rules.append(LimitRule("*", defaults))
    rules += [entry.rule() for entry in spec.limits]
    return tuple(rules)


def _unknown_needs(needs: list[str] | None, where: str) -> list[str]:
    """A needed capability no testbed offers is a skip everywhere: almost always a typo."""
    out = []
    for word in needs or ():
        if not is_known(word):
            close = difflib.get_close_matches(word, sorted(KNOWN), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"{where}: needs {word!r}, which no testbed offers{hint}; the test will be skipped "
                       f"everywhere (known: {', '.join(sorted(KNOWN))}, arch:<architecture>)")
    return out


def _listed_files(names: list[str], key: str, what: str, directory: Path, suite_file: Path) -> tuple[Path, ...]:
    out = []
    for i, name in enumerate(names):
        path = (directory / name).resolve()
        if not path.is_file():
            line = load_yaml(suite_file).line_of((key, i))
            raise SourceError(str(suite_file), line, f"{what} {name!r} does not exist", key)
        out.append(path)
    return tuple(out)


def _builtins(spec: SuiteFile, suite_file: Path, scripts: dict[str, Path]) -> tuple[BuiltinUse, ...]:
    """Names, options and lines of the built-ins a suite asks for; the checks
    layer knows which exist (checks.builtin.builtin_checks validates them)."""
    out = []
    for i, ref in enumerate(spec.builtins):
        name = ref if isinstance(ref, str) else ref.name
        options = {} if isinstance(ref, str) else {k: str(v) for k, v in (ref.model_extra or {}).items()}
        line = load_yaml(suite_file).line_of(("builtins", i)) or 0
        if name in scripts:
            raise SourceError(str(suite_file), line, f"built-in {name!r} has the name of a script test", "builtins")
        out.append(BuiltinUse(name=name, options=tuple(sorted(options.items())), line=line))
    return tuple(out)
