"""Already passed: when every test a run names passed before on these bytes, with this content, on every
testbed it asks for, the answer comes from the catalog's plain-SQL reader and nothing runs, nothing is made and
nothing is recorded — what the engine would do with each of them (reuse the earlier pass) without loading the
ORM, a testbed or the image. Anything else (a test never passed here, a run that asks for more than verdicts:
reports, a hold, other test kinds, workers, ``auto``) is left to the full path (``app.testing``), which also says
what is wrong with a request."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from imageci.app import access
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.app.testrequest import TestRequest, executor_for, testbeds_for
from imageci.capabilities import AUTO
from imageci.checks.consumerkeys import PREFIX as CONSUMER_PREFIX
from imageci.checks.findings import reusable
from imageci.errors import ImageciError
from imageci.formats.oci import ImageConfig, image_config
from imageci.store import lookups
from imageci.store.blobs import BlobStore
from imageci.store.states import OCI_CONFIG, SUITE, State

log = logging.getLogger("imageci.app")


@dataclass(frozen=True)
class EarlierPass:
    test: str
    testbed: str
    run: int  # the run that recorded it


@dataclass(frozen=True)
class Passed:
    image: str  # NAME@SERIAL
    digest: str
    testbeds: list[str]
    passes: list[EarlierPass]


def image_config_of(store: BlobStore, stored: str | None, name: str, digest: str, label: str) -> ImageConfig:
    """The image's runtime configuration: its stored OCI config (``stored``, a blob digest), else imageci's
    default (versions from before it was stored)."""
    if stored is None:
        return image_config(name, digest)
    try:
        doc = json.loads(store.read_bytes(stored))
    except ValueError as exc:
        raise ImageciError(f"{label}: its stored image configuration is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ImageciError(f"{label}: its stored image configuration is not a JSON object")
    return ImageConfig.from_oci(doc)


def answerable(session: Session, request: TestRequest) -> bool:
    """Whether the request asks for verdicts alone, of tests it names, here: what an earlier pass answers."""
    return bool(request.tests) and not (
        request.rerun_all or request.junit or request.tap or request.hold or request.extra
        or executor_for(request, session.settings.executor) != "local"
        or any(t.startswith(CONSUMER_PREFIX) for t in request.tests or []) or AUTO in request.testbeds)


def earlier_passes(session: Session, request: TestRequest) -> Passed | None:
    """The earlier pass of each test × testbed the request names, when every one has one that still counts
    (the machine complained in it of nothing the suite now fails on); None: the run must go the full way."""
    if not answerable(session, request):
        return None
    from imageci.checks.suite import suite_checks
    from imageci.definitions.suite import load_suite
    from imageci.store.snapshots import unpack_tree

    try:
        info = access.resolve(session.reader, LOCAL, request.ref)
        if info.state == State.DELETED or not session.store.has(info.digest):
            return None  # (its bytes are gone: the full path records why nothing can run)
        stored = {a.kind: a.digest for a in lookups.artifacts(session.reader, info.id)}
        if request.suite is None and SUITE not in stored:
            return None
        suite = load_suite(request.suite if request.suite is not None else
                           unpack_tree(session.store, stored[SUITE], session.settings.home / "suites"))
        config = image_config_of(session.store, stored.get(OCI_CONFIG), info.name, info.digest, info.label)
        checks = suite_checks(suite, list(request.tests or []), config)
    except (ImageciError, OSError):
        return None  # (the full path says what is wrong)
    testbeds = testbeds_for(request, suite)
    if AUTO in testbeds or {c.id for c in checks} != set(request.tests or []):
        return None
    found = []
    for check in checks:
        for testbed in testbeds:
            earlier = lookups.first_pass(session.reader, info.digest, check.id, check.digest, testbed)
            if earlier is None or not reusable(earlier[1], suite.fail_on):
                return None
            found.append(EarlierPass(check.id, testbed, earlier[0]))
    for line in suite.warnings:
        log.warning("%s", line)
    return Passed(info.label, info.digest, testbeds, found)
