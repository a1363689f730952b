"""Consumers' suites in a run: the checks of a version's consumers (from this home's snapshots, or
fetched from a server), their verdicts against the stable version's (did this version break them?),
the culprits among the packages that changed, and the gate's consumer section."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from imageci.app import access
from imageci.app.access import LOCAL
from imageci.app.operations import Asks
from imageci.app.session import Session
from imageci.app.versions import Carried, gate_of, label_of
from imageci.checks.consumerkeys import consumer_digest, consumer_test_id
from imageci.errors import ImageciError
from imageci.policy.consumergate import ConsumerVerdict, Side, judge
from imageci.policy.sections import GateSection
from imageci.store import gatelookups, lookups
from imageci.store.blobs import BlobWriter
from imageci.store.gatelookups import VersionRecord
from imageci.store.lookups import AttemptInfo
from imageci.store.states import State, as_utc
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

if TYPE_CHECKING:  # (registering, snapshotting, running consumers: what a gate reading their verdicts never loads)
    from imageci.app.consumers import ConsumerRow
    from imageci.checks.consumer import ConsumerCheck

log = logging.getLogger("imageci.app")


class ConsumerOrigin(Asks, Protocol):
    """A server whose consumers a run here (remote `test`/`pipeline`, a worker) runs (``ApiClient``)."""

    def consumer_snapshot(self, name: str, into: BlobWriter) -> None: ...


def _listed(origin: ConsumerOrigin, product: str) -> list[ConsumerRow]:
    from imageci.app.consumers import ConsumerListArgs, consumer_list

    return origin.call(consumer_list, ConsumerListArgs(product=product))


def fetched_checks(session: Session, origin: ConsumerOrigin, product: str,
                   names: list[str] | None = None) -> list[ConsumerCheck]:
    """The consumers the server has registered for ``product`` (only those named, when ``names``), as checks
    here: each snapshot fetched by digest (checked while it streams) into this home, so the evidence they
    record is keyed exactly as the server's gate reads it."""
    from imageci.app.consumers import snapshot_tree
    from imageci.checks.consumer import ConsumerCheck, ConsumerSpec

    out = []
    for row in _listed(origin, product):
        if row.snapshot is None or row.removed is not None or (names is not None and row.name not in names):
            continue
        digest = row.snapshot.removeprefix("sha256:")
        if not session.store.has(digest):
            origin.consumer_snapshot(row.name, session.store.writer(digest))
        out.append(ConsumerCheck(ConsumerSpec(name=row.name, tree=snapshot_tree(session, digest), command=row.command,
                                              setup=row.setup, timeout=row.timeout, snapshot=digest,
                                              gating=row.gating)))
    return out


def checks_for(session: Session, version: Carried, names: list[str] | None = None) -> list[ConsumerCheck]:
    """The consumers of the version's product as checks (only those named, when ``names``), each from a
    snapshot taken now (the last one, with a warning, when its source is gone)."""
    from imageci.app.consumers import snapshot_tree, take_snapshot
    from imageci.checks.consumer import ConsumerCheck, ConsumerSpec

    out = []
    for c, _product in session.catalog.consumers(version.name):
        if names is not None and c.name not in names:
            continue
        try:
            snapshot, revision = take_snapshot(session, c)
        except ImageciError as exc:
            if c.snapshot is None:
                raise
            log.warning("consumer %s: %s; running its last snapshot (sha256:%s, taken %s)", c.name, exc,
                        c.snapshot[:12], as_utc(c.snapshot_at or c.created_at).isoformat(timespec="seconds"))
            snapshot, revision = c.snapshot, c.revision
        if (snapshot, revision) != (c.snapshot, c.revision):
            session.catalog.set_consumer_snapshot(c.id, snapshot, revision)
        out.append(ConsumerCheck(ConsumerSpec(name=c.name, tree=snapshot_tree(session, snapshot), command=c.command,
                                              setup=c.setup, timeout=c.timeout, snapshot=snapshot, gating=c.gating)))
    return out


def _side(version: Carried, attempts: list[AttemptInfo], test_id: str, digest: str, testbeds: list[str]) -> Side:
    """How the consumer did on ``version``'s bytes (whose recorded ``attempts`` these are) on every testbed:
    passed, failed, or not known."""
    by_testbed: dict[str, list[AttemptInfo]] = {}
    for a in attempts:
        if a.test_id == test_id and a.test_digest == digest:
            by_testbed.setdefault(a.testbed, []).append(a)
    failed: AttemptInfo | None = None
    unknown = []
    for tb in testbeds:
        mine = by_testbed.get(tb, [])
        if any(a.verdict == Verdict.PASS for a in mine) or (
                mine and mine[-1].verdict == Verdict.SKIP and mine[-1].exit_code == SKIP_EXIT_CODE):
            continue
        ran = [a for a in mine if a.verdict in (Verdict.FAIL, Verdict.FLAKY)]
        if ran:
            failed = failed or ran[-1]
        else:
            unknown.append(tb)
    if failed is not None:
        return Side(label_of(version), "failed", failed.testbed, failed.reason, failed.log_digest)
    if unknown:
        return Side(label_of(version), "unknown", unknown[0])
    return Side(label_of(version), "passed")


def _stable(session: Session, version: Carried) -> VersionRecord | None:
    stable = [v for v in gatelookups.records(session.reader, version.name, {State.STABLE.value}) if v.id != version.id]
    return max(stable, key=lambda v: v.serial) if stable else None


def _culprits(session: Session, before: Carried, after: Carried, tree: Path, failed: Side) -> list[str]:
    from imageci.app import inventory  # (only a consumer this version broke needs the package changes)
    from imageci.definitions.runtimes import declared_runtimes
    from imageci.supply.culprits import rank

    try:
        a = access.resolve(session.reader, LOCAL, label_of(before))
        b = access.resolve(session.reader, LOCAL, label_of(after))
        changes = inventory.version_diff(session, a, b)
        files = inventory.files_of(session, b)
    except ImageciError as exc:
        return [f"the package changes could not be read: {exc}"]
    text = ""
    if failed.log_digest and session.store.has(failed.log_digest):
        text = session.store.read_bytes(failed.log_digest).decode("utf-8", "replace")

    def owner(path: str) -> str | None:
        entry = files.files.get(path.lstrip("/"))
        return entry.owner if entry is not None and entry.owner else None

    found = rank(changes.packages, declared_runtimes(tree / "suite").constraints, text, owner)
    if not found:
        n = len(changes.packages)
        return [f"no package change is named by the suite or its log ({n} package(s) changed: imageci diff "
                f"{label_of(before)} {label_of(after)})"]
    return [f"likely cause: {c.describe()}" for c in found]


def verdicts(session: Session, version: Carried) -> list[ConsumerVerdict]:
    """Each consumer of the version's product, judged on its recorded evidence: this version against the
    current stable one, on the gate's testbeds, at the consumer's newest snapshot."""
    registered = [c for c in gatelookups.consumers(session.reader, version.name) if c.snapshot is not None]
    if not registered:
        return []
    g = gate_of(version)
    testbeds = list(g.testbeds) if g is not None else ["sandbox"]
    stable = _stable(session, version)
    mine = lookups.attempts(session.reader, version.digest)
    theirs = lookups.attempts(session.reader, stable.digest) if stable is not None else []
    out = []
    for c in registered:
        assert c.snapshot is not None
        test_id, digest = consumer_test_id(c.name), consumer_digest(c.snapshot, c.command, c.setup, c.timeout)
        new = _side(version, mine, test_id, digest, testbeds)
        old = _side(stable, theirs, test_id, digest, testbeds) if stable is not None else None
        verdict = judge(c.name, c.gating, new, old)
        if verdict.regression and stable is not None:
            from imageci.app.consumers import snapshot_tree

            verdict.culprits = _culprits(session, stable, version, snapshot_tree(session, c.snapshot), new)
        out.append(verdict)
    return out


def gate_section(session: Session, version: Carried) -> GateSection | None:
    """The gate's consumers section (None: the product has no consumers)."""
    judged = verdicts(session, version)
    if not judged:
        return None
    blocking = [v for v in judged if v.blocks]
    regressions = [v for v in judged if v.regression]
    parts = [f"{len(judged)} consumer(s)", f"{sum(v.new.status == 'passed' for v in judged)} passed"]
    if regressions:
        parts.append(f"{len(regressions)} broken by this version")
    if blocking:
        parts.append(f"{len(blocking)} blocking")
    lines = []
    for v in judged:
        lines.append(v.line())
        lines += [f"  {c}" for c in v.culprits]
    return GateSection("consumers", not blocking, ", ".join(parts), lines)
