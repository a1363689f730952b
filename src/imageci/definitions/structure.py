"""container-structure-test configuration files (schemaVersion 2.0.0).

The same YAML users already keep for ``container-structure-test``:
``commandTests``, ``fileExistenceTests``, ``fileContentTests``,
``metadataTest``, ``licenseTests`` and ``globalEnvVars``. Unknown keys, a
missing ``schemaVersion``, a regex that does not compile and duplicate test
names are file:line errors; ``containerRunOptions`` (docker-driver flags) is
refused with the reason rather than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from imageci.definitions.yamlsource import LocatedData, load_yaml, validate
from imageci.errors import SourceError

SCHEMA_VERSION = "2.0.0"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class EnvVar(_Strict):
    key: str = Field(min_length=1)
    value: str = ""
    is_regex: bool = Field(default=False, alias="isRegex")


class CommandTest(_Strict):
    name: str = Field(min_length=1)
    command: str = Field(min_length=1)
    args: tuple[str, ...] = ()
    setup: tuple[tuple[str, ...], ...] = ()
    teardown: tuple[tuple[str, ...], ...] = ()
    env_vars: tuple[EnvVar, ...] = Field(default=(), alias="envVars")
    expected_output: tuple[str, ...] = Field(default=(), alias="expectedOutput")
    excluded_output: tuple[str, ...] = Field(default=(), alias="excludedOutput")
    expected_error: tuple[str, ...] = Field(default=(), alias="expectedError")
    excluded_error: tuple[str, ...] = Field(default=(), alias="excludedError")
    exit_code: int = Field(default=0, alias="exitCode")

    @model_validator(mode="after")
    def _no_empty_commands(self) -> CommandTest:
        if any(not c for c in (*self.setup, *self.teardown)):
            raise ValueError("setup and teardown commands must not be empty")
        return self


class FileExistenceTest(_Strict):
    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    should_exist: bool = Field(default=True, alias="shouldExist")
    permissions: str | None = None
    uid: int | None = None
    gid: int | None = None
    is_executable_by: Literal["any", "owner", "group", "other"] | None = Field(default=None, alias="isExecutableBy")


class FileContentTest(_Strict):
    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    expected_contents: tuple[str, ...] = Field(default=(), alias="expectedContents")
    excluded_contents: tuple[str, ...] = Field(default=(), alias="excludedContents")


class MetadataTest(_Strict):
    env_vars: tuple[EnvVar, ...] = Field(default=(), alias="envVars")
    env: tuple[EnvVar, ...] = ()  # older spelling of envVars
    unbound_env_vars: tuple[EnvVar, ...] = Field(default=(), alias="unboundEnvVars")
    labels: tuple[EnvVar, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    exposed_ports: tuple[str, ...] = Field(default=(), alias="exposedPorts")
    unexposed_ports: tuple[str, ...] = Field(default=(), alias="unexposedPorts")
    volumes: tuple[str, ...] = ()
    unmounted_volumes: tuple[str, ...] = Field(default=(), alias="unmountedVolumes")
    workdir: str | None = None
    user: str | None = None


class LicenseTest(_Strict):
    debian: bool
    files: tuple[str, ...] = ()


class StructureFile(_Strict):
    schema_version: str = Field(alias="schemaVersion")
    global_env_vars: tuple[EnvVar, ...] = Field(default=(), alias="globalEnvVars")
    command_tests: tuple[CommandTest, ...] = Field(default=(), alias="commandTests")
    file_existence_tests: tuple[FileExistenceTest, ...] = Field(default=(), alias="fileExistenceTests")
    file_content_tests: tuple[FileContentTest, ...] = Field(default=(), alias="fileContentTests")
    metadata_test: MetadataTest | None = Field(default=None, alias="metadataTest")
    license_tests: tuple[LicenseTest, ...] = Field(default=(), alias="licenseTests")
    container_run_options: dict[str, Any] | None = Field(default=None, alias="containerRunOptions")


@dataclass(frozen=True)
class StructureSpec:
    path: Path
    spec: StructureFile
    lines: dict[str, int]  # test id -> line, for messages


KIND_KEYS = {"command": "commandTests", "existence": "fileExistenceTests", "content": "fileContentTests"}


def load_structure(path: Path) -> StructureSpec:
    src = load_yaml(path)
    if isinstance(src.data, dict) and "schemaVersion" in src.data:
        version = str(src.data["schemaVersion"])
        if version != SCHEMA_VERSION:
            raise SourceError(str(path), src.line_of(("schemaVersion",)), f"schemaVersion {version!r} is not "
                              f"supported (only {SCHEMA_VERSION!r})", "schemaVersion")
    spec = validate(StructureFile, src)
    if spec.container_run_options is not None:
        raise SourceError(str(path), src.line_of(("containerRunOptions",)), "containerRunOptions are docker-driver "
                          "flags imageci does not apply; choose the testbed with --testbed instead",
                          "containerRunOptions")
    lines: dict[str, int] = {}
    for kind, key in KIND_KEYS.items():
        seen: dict[str, int] = {}
        for i, test in enumerate(getattr(spec, _attr(key))):
            line = src.line_of((key, i)) or 0
            if test.name in seen:
                raise SourceError(str(path), line, f"duplicate {key} name {test.name!r} (first on line "
                                  f"{seen[test.name]})", key)
            seen[test.name] = line
            lines[f"{kind}/{test.name}"] = line
            _check_regexes(src, (key, i), test)
    if spec.metadata_test is not None:
        _check_regexes(src, ("metadataTest",), spec.metadata_test)
    return StructureSpec(path, spec, lines)


def _attr(alias: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), alias)


def _check_regexes(src: LocatedData, loc: tuple[str | int, ...], test: BaseModel) -> None:
    fields = ("expected_output", "excluded_output", "expected_error", "excluded_error", "expected_contents",
              "excluded_contents")
    for name in fields:
        for j, pattern in enumerate(getattr(test, name, ())):
            _compile(src, (*loc, _alias(test, name), j), pattern)
    for name in ("env_vars", "env", "labels"):
        for j, var in enumerate(getattr(test, name, ())):
            if var.is_regex:
                _compile(src, (*loc, _alias(test, name), j), var.value)


def _alias(model: BaseModel, field: str) -> str:
    return type(model).model_fields[field].alias or field


def go_regex(pattern: str) -> str:
    """Go (RE2) regex semantics in Python's syntax where they differ: outside
    multi-line mode ``$`` matches only at the very end of the text (Python's
    also matches before a final newline), and ``\\z`` is Python's ``\\Z``."""
    if pattern.startswith("(?") and "m" in pattern[2:pattern.find(")")]:
        return pattern.replace("\\z", "\\Z")
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append("\\Z" if nxt == "z" and not in_class else ch + nxt)
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        elif ch == "$" and not in_class:
            ch = "\\Z"
        out.append(ch)
        i += 1
    return "".join(out)


def _compile(src: LocatedData, loc: tuple[str | int, ...], pattern: str) -> None:
    try:
        re.compile(go_regex(pattern))
    except re.error as exc:
        raise SourceError(src.path, src.line_of(loc), f"bad regular expression {pattern!r}: {exc}",
                          ".".join(str(p) for p in loc)) from None
