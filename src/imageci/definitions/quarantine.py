"""Flake policy as data: a quarantine file kept next to the tests.

``quarantine.yaml`` in the suite directory (or ``--quarantine FILE``)::

    quarantine:
      - test: network-*            # glob on the test id (dep8:gzip/* too)
        tracker: https://bugs.example.org/1234
        expires: 2026-12-31        # last day it applies; afterwards imageci warns and ignores it
        mode: warn                 # warn: run, report, never fail the run or block the gate
                                   # skip: do not run at all
        testbeds: [qemu, ssh:*]    # optional scope (globs)
        arch: [arm64]              # optional scope
        reason: flaky DNS in TCG guests

Every entry needs a tracker and an expiry: a quarantine nobody follows up on
should run out. Unknown keys and bad values are file:line errors.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imageci.definitions.suite import QUARANTINE_FILE
from imageci.definitions.yamlsource import load_yaml, validate


def tracker_link(v: str) -> str:
    """A tracker: a URL, or an id like debian#123456 (quarantine entries and known failures)."""
    if not v.startswith(("http://", "https://")) and "#" not in v:
        raise ValueError("tracker must be a URL (or an id like debian#123456)")
    return v


class QuarantineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    test: str = Field(min_length=1, description="glob on test ids")
    tracker: str = Field(min_length=1, description="where the problem is followed up")
    expires: date = Field(description="last day the entry applies")
    mode: Literal["warn", "skip"] = "warn"
    testbeds: tuple[str, ...] | None = None
    arch: tuple[str, ...] | None = None
    reason: str = ""

    @field_validator("tracker")
    @classmethod
    def _tracker_is_a_link(cls, v: str) -> str:
        return tracker_link(v)


class QuarantineFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    quarantine: list[QuarantineEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class Located:
    entry: QuarantineEntry
    path: str
    line: int


@dataclass(frozen=True)
class Quarantine:
    entries: tuple[Located, ...] = ()

    def match(self, test_id: str, testbed: str, arch: str, today: date) -> QuarantineEntry | None:
        """The first entry in force for this test on this testbed and architecture."""
        for loc in self.entries:
            e = loc.entry
            if e.expires < today or not fnmatch.fnmatchcase(test_id, e.test):
                continue
            if e.testbeds is not None and not any(fnmatch.fnmatchcase(testbed, p) for p in e.testbeds):
                continue
            if e.arch is not None and arch not in e.arch:
                continue
            return e
        return None

    def expired(self, today: date) -> list[Located]:
        return [loc for loc in self.entries if loc.entry.expires < today]


def load_quarantine(path: Path) -> Quarantine:
    src = load_yaml(path)
    if src.data is None:
        return Quarantine()
    spec = validate(QuarantineFile, src)
    located = []
    for i, entry in enumerate(spec.quarantine):
        line = src.line_of(("quarantine", i)) or 0
        located.append(Located(entry, str(path), line))
    return Quarantine(tuple(located))


def quarantine_for_suite(suite_dir: Path | None, override: Path | None) -> Quarantine:
    """``override`` if given, else the suite's ``quarantine.yaml`` if it has one."""
    if override is not None:
        return load_quarantine(override)
    if suite_dir is not None and (suite_dir / QUARANTINE_FILE).is_file():
        return load_quarantine(suite_dir / QUARANTINE_FILE)
    return Quarantine()
