"""The package databases' record formats, read with line numbers so that a damaged database is
refused with ``file:line`` and the record it is in, never half read.

- dpkg's status file (and distroless ``status.d/*``): RFC 822-style paragraphs, ``Field: value``
  with continuation lines starting with a space or tab, separated by blank lines.
- apk's ``lib/apk/db/installed``: one ``K:value`` per line, records separated by blank lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from imageci.errors import UsageError

FIELD = re.compile(r"([!-9;-~][!-9;-~]*):(.*)")  # a field name is printable ASCII without ':' or space


class DamagedDatabase(UsageError):
    """A package database that cannot be read as its format says: nothing of it is used."""


@dataclass
class Record:
    where: str  # FILE:LINE of the record's first line
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)


def _named(record: Record) -> str:
    name = record.get("Package") or record.get("P")
    return f", {name}" if name else ""


def paragraphs(text: str, path: str) -> Iterator[Record]:
    """The paragraphs of a deb822 file (field names compared case-insensitively, as dpkg does:
    stored under their first spelling's canonical form, e.g. ``Package``)."""
    record: Record | None = None
    last: str | None = None
    names: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if record is not None:
                yield record
            record, last, names = None, None, {}
            continue
        if line[0] in " \t":
            if record is None or last is None:
                raise DamagedDatabase(f"{path}:{number}: a continuation line outside any field")
            record.fields[last] += "\n" + line[1:]
            continue
        m = FIELD.fullmatch(line)
        if m is None:
            within = f" (in the record at {record.where}{_named(record)})" if record is not None else ""
            raise DamagedDatabase(f"{path}:{number}: not a 'Field: value' line: {line[:80]!r}{within}")
        if record is None:
            record = Record(f"{path}:{number}")
        key = m.group(1).lower()
        if key in names:
            raise DamagedDatabase(f"{path}:{number}: field {m.group(1)!r} given twice in the record at "
                                  f"{record.where}")
        names[key] = m.group(1)
        last = m.group(1)
        record.fields[last] = m.group(2).strip()
    if record is not None:
        yield record


def apk_records(text: str, path: str) -> Iterator[Record]:
    """The records of apk's installed database; per-file lines (F, R, a, M, Z) are skipped."""
    record: Record | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if record is not None:
                yield record
            record = None
            continue
        key, sep, value = line.partition(":")
        if not sep or len(key) != 1:
            raise DamagedDatabase(f"{path}:{number}: not a 'K:value' line: {line[:80]!r}")
        if record is None:
            record = Record(f"{path}:{number}")
        if key in "FRaMZ":
            continue
        record.fields.setdefault(key, value)
    if record is not None:
        yield record
