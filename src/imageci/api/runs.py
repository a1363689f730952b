"""Runs recorded from elsewhere (a remote CLI, a worker): starting one and
recording an attempt answer 201, or 200 for a retry with the same
``Idempotency-Key``; a job's live log is read as text. The rest of this group
is derived from its operations (``imageci.api.derived``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi import Path as FastPath

from imageci.app import livelogs, recording
from imageci.app.operations import MAX_ID
from imageci.server.deps import Caller, SessionDep

API = "/api/v1"
RunId = Annotated[int, FastPath(ge=1, le=MAX_ID, description="a run's id")]
router = APIRouter(tags=["runs"])


@router.post(f"{API}/images/{{ref}}/runs", response_model=recording.RunStarted, status_code=201)
def run_start(ref: str, body: recording.RunStart, response: Response, s: SessionDep, caller: Caller,
              idempotency_key: Annotated[str | None, Header()] = None) -> recording.RunStarted:
    """Start recording a run of a version tested elsewhere (scope ``test``). With an
    ``Idempotency-Key``, a retry answers 200 with the same run."""
    started = recording.start_run(s, ref, body, by=caller, key=idempotency_key)
    if not started.created:
        response.status_code = 200
    return started


@router.post(f"{API}/runs/{{run_id}}/attempts", response_model=recording.AttemptRecorded, status_code=201)
def attempt_record(run_id: RunId, body: recording.AttemptIn, response: Response, s: SessionDep, caller: Caller,
                   idempotency_key: Annotated[str | None, Header()] = None) -> recording.AttemptRecorded:
    """Record one attempt of a running run, with its log. With an ``Idempotency-Key``, a retried
    POST is recorded once (200 with the same id)."""
    done = recording.record_attempt(s, run_id, body, by=caller, key=idempotency_key)
    if not done.created:
        response.status_code = 200
    return done


@router.get(f"{API}/runs/{{run_id}}/live/{{key}}", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
def live_read(run_id: RunId, key: Annotated[str, FastPath(min_length=8, max_length=128)], s: SessionDep,
              caller: Caller, offset: Annotated[int, Query(ge=0, le=livelogs.MAX_LIVE * 2)] = 0) -> Response:
    """A job's live log from ``offset`` (at most 1 MiB; empty: nothing more yet)."""
    return Response(livelogs.read(s, run_id, key, offset, viewer=caller), media_type="text/plain; charset=utf-8",
                    headers={"Cache-Control": "no-store"})
