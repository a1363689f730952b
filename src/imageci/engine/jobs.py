"""A job: one test × testbed × image digest, as the broker carries it to a
worker, and what the worker sends back once the server recorded its attempt."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

TASK = "imageci.job"  # the one Celery task: a worker runs a job (imageci.worker.tasks registers it)


class Intermediate(BaseModel):
    """A bisection's intermediate image (``build.intermediate``): the good end's tree with ``moves`` taken
    from the bad end's (the job's ``image``). The worker makes it from the two versions, fetched from the
    server; the job's ``digest`` is its recipe's, which the worker checks."""

    good: str = Field(description="the good end, NAME@SERIAL on the server")
    good_digest: str = Field(description="its sha256 (hex)")
    bad_digest: str = Field(description="the bad end's (the job's image) sha256 (hex)")
    moves: list[dict[str, Any]] = Field(description="the changes taken from the bad end (build.intermediate.Move)")


class Job(BaseModel):
    run: int = Field(description="the run on the server that records the attempt")
    image: str = Field(description="NAME@SERIAL on the server")
    digest: str = Field(description="the image's sha256 (hex): what the worker verifies it tests")
    test: str
    test_digest: str = Field(description="the test's content digest: the worker's copy of the suite must agree")
    testbed: str
    attempt: int = Field(ge=1)
    limits: dict[str, int | None] = Field(default_factory=dict, description="the test's resolved limits")
    complaints: bool = Field(default=True, description="read the machine's own complaints around the test")
    fail_on: list[str] = Field(default_factory=list, description="the kinds of complaint that fail a passing test")
    hold: float = Field(default=0, ge=0, description="seconds the worker keeps the testbed when the test fails "
                        "(``--hold-on-failure``; 0: removed at once)")
    key: str = Field(description="the attempt's idempotency key: one attempt recorded however often it runs")
    queue: str
    intermediate: Intermediate | None = Field(default=None, description="a bisection's step: the image to make")


class JobDone(BaseModel):
    attempt_id: int = Field(description="the attempt as the server recorded it")
    created: bool = Field(description="False: a delivery before this one had recorded it (that one counts)")
    verdict: str
    reason: str
    worker: str = Field(description="the worker that ran it")
    seconds: float
    dropped: str = Field(default="", description="why it did not run (its run had ended): nothing recorded")
