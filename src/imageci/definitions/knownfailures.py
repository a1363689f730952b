"""Known failures as data: failures whose log says what they are (an infrastructure problem, a bug
being followed up), labelled with their tracker wherever they are shown.

``known-failures.yaml`` in the suite directory, or kept in the catalog per product (``imageci
known-failures add``)::

    known-failures:
      - test: net-*                      # glob on test ids
        pattern: "Temporary failure in name resolution"   # a regular expression, searched in the log
        tracker: https://bugs.example.org/77
        retry: 2                         # re-run a failure that matches up to this many times (default 0)
        expires: 2027-03-31              # optional: the last day it applies

A label never turns a failure into a pass (that is quarantine's job, with its expiry): a labelled
failure fails as before, says which tracker follows it, and is counted by ``imageci flaky``; with
``retry``, it is run again, and a later pass makes the result ``flaky`` as ``--retries`` does. Unknown
keys, bad values and patterns that do not compile are file:line errors.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imageci.definitions.quarantine import tracker_link
from imageci.definitions.yamlsource import load_yaml, validate

KNOWN_FILE = "known-failures.yaml"
MAX_PATTERN = 500  # characters: a pattern is searched in every failing log
SEARCHED = 256 * 1024  # bytes of a log's end that patterns are searched in
MAX_RETRY = 5


class KnownFailure(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    test: str = Field(min_length=1, max_length=255, description="glob on test ids")
    pattern: str = Field(min_length=1, max_length=MAX_PATTERN, description="a regular expression searched in the log")
    tracker: str = Field(min_length=1, max_length=2000, description="where it is followed up")
    retry: int = Field(default=0, ge=0, le=MAX_RETRY, description="re-run a matching failure up to this many times")
    expires: date | None = Field(default=None, description="the last day it applies (none: until removed)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return v

    @field_validator("tracker")
    @classmethod
    def _tracker_is_a_link(cls, v: str) -> str:
        return tracker_link(v)


class KnownFailuresFile(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    known_failures: list[KnownFailure] = Field(default_factory=list, alias="known-failures")


@dataclass(frozen=True)
class Known:
    """Entries in force, in order: the suite's, then the catalog's."""

    entries: tuple[KnownFailure, ...] = ()

    def match(self, test_id: str, log: bytes, today: date) -> KnownFailure | None:
        """The first entry for this test whose pattern the log's end matches."""
        text: str | None = None
        for e in self.entries:
            if (e.expires is not None and e.expires < today) or not fnmatch.fnmatchcase(test_id, e.test):
                continue
            if text is None:
                text = log[-SEARCHED:].decode("utf-8", "replace")
            if re.search(e.pattern, text, re.MULTILINE):
                return e
        return None


def load_known(path: Path) -> Known:
    src = load_yaml(path)
    if src.data is None:
        return Known()
    return Known(tuple(validate(KnownFailuresFile, src).known_failures))


def known_for_suite(suite_dir: Path | None) -> Known:
    """The suite's ``known-failures.yaml``, if it has one."""
    if suite_dir is not None and (suite_dir / KNOWN_FILE).is_file():
        return load_known(suite_dir / KNOWN_FILE)
    return Known()
