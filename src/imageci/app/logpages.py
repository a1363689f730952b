"""A stored log, a page at a time: a window of at most ``PAGE`` bytes that ends
on a line boundary, so a browser never receives a whole large log. Without an
offset the page is the log's end (where a failure says why), starting on a line."""

from __future__ import annotations

from pydantic import BaseModel

from imageci.app import queries
from imageci.app.access import LOCAL, Principal
from imageci.app.session import Session
from imageci.errors import ImageciError

PAGE = 64 << 10


class LogPage(BaseModel):
    image: str  # NAME@SERIAL
    test: str
    testbed: str
    run: int
    attempt: int
    verdict: str
    reason: str
    text: str  # this page, decoded (invalid UTF-8 replaced)
    offset: int  # where the page starts in the log (bytes)
    end: int  # where it ends
    size: int  # the whole log's bytes
    previous: int | None  # the offset of the page before (None: this is the first)
    next: int | None  # … after (None: this is the last)
    missing: str | None = None  # why there is no log to show


def log_page(session: Session, ref: str, test: str, *, run: int | None = None, attempt: int | None = None,
             testbed: str | None = None, offset: int | None = None, page: int = PAGE,
             viewer: Principal = LOCAL) -> LogPage:
    """One page of the log of an attempt (as :func:`queries.find_attempt` picks it) from ``offset``
    (None: the last page). A log that was not kept, or is missing from the store, is a page that says so."""
    version, found = queries.find_attempt(session, ref, test, run=run, attempt=attempt, testbed=testbed,
                                          viewer=viewer)
    empty = LogPage(image=version.label, test=found.test_id, testbed=found.testbed, run=found.run_id,
                    attempt=found.attempt, verdict=found.verdict, reason=found.reason, text="", offset=0, end=0,
                    size=0, previous=None, next=None)
    try:
        path = queries.stored_log(session, found)
    except ImageciError as exc:
        return empty.model_copy(update={"missing": str(exc)})
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        start = max(0, size - page) if offset is None else min(max(0, offset), size)
        fh.seek(start)
        chunk = fh.read(min(page, size - start))
    if offset is None and start > 0:  # the tail: from the first whole line
        cut = chunk.find(b"\n")
        if 0 <= cut < len(chunk) - 1:
            chunk, start = chunk[cut + 1:], start + cut + 1
    end = start + len(chunk)
    if end < size:  # end on a line boundary when the window holds one
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            chunk, end = chunk[:cut + 1], start + cut + 1
    return empty.model_copy(update={"text": chunk.decode("utf-8", "replace"), "offset": start, "end": end, "size": size,
                                    "previous": max(0, start - page) if start > 0 else None,
                                    "next": end if end < size else None})
