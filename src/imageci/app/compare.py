"""Two versions side by side: "last good" against "first bad". Which tests
changed verdict on which testbed, how their recorded build differs (the
flattened build info: builder, mirror snapshot, command, …), and what changed
inside: packages and files (``app.inventory``)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from imageci.app import access, inventory
from imageci.app.access import LOCAL, Principal
from imageci.app.inventory import VersionDiff
from imageci.app.matrix import matrix
from imageci.app.session import Session
from imageci.errors import ImageciError


class VerdictChange(BaseModel):
    test: str
    testbed: str
    before: str | None  # None: not run on A
    after: str | None


class InfoChange(BaseModel):
    key: str  # dotted path in the build info
    before: str | None
    after: str | None


class Comparison(BaseModel):
    before: str  # NAME@SERIAL
    after: str
    before_digest: str
    after_digest: str
    changed: list[VerdictChange]  # only the pairs whose verdict differs
    same: int  # pairs with the same verdict on both
    build: list[InfoChange]
    contents: VersionDiff | None = None  # packages and files (None: could not be read; see contents_error)
    contents_error: str = ""


def _flat(doc: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(doc, dict):
        out: dict[str, str] = {}
        for k, v in doc.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(doc) if not isinstance(doc, str) else doc}


def _verdicts(session: Session, ref: str, viewer: Principal) -> dict[tuple[str, str], str | None]:
    m = matrix(session, ref, viewer=viewer)
    return {(row.test, col.testbed): cell.verdict
            for row in m.rows for col, cell in zip(m.columns, row.cells, strict=True)}


def compare(session: Session, before: str, after: str, *, viewer: Principal = LOCAL) -> Comparison:
    a, b = access.resolve(session.reader, viewer, before), access.resolve(session.reader, viewer, after)
    va, vb = _verdicts(session, a.label, viewer), _verdicts(session, b.label, viewer)
    changed, same = [], 0
    for key in sorted(va.keys() | vb.keys()):
        x, y = va.get(key), vb.get(key)
        if x == y:
            same += 1
        else:
            changed.append(VerdictChange(test=key[0], testbed=key[1], before=x, after=y))
    ia = _flat(json.loads(session.catalog.resolve(a.label).build_info or "{}"))
    ib = _flat(json.loads(session.catalog.resolve(b.label).build_info or "{}"))
    build = [InfoChange(key=k, before=ia.get(k), after=ib.get(k)) for k in sorted(ia.keys() | ib.keys())
             if ia.get(k) != ib.get(k)]
    contents, error = None, ""
    try:
        contents = inventory.diff(session, a.label, b.label, viewer=viewer)
    except ImageciError as exc:
        error = str(exc)
    return Comparison(before=a.label, after=b.label, before_digest=f"sha256:{a.digest}",
                      after_digest=f"sha256:{b.digest}", changed=changed, same=same, build=build,
                      contents=contents, contents_error=error)
