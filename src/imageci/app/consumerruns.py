"""Consumers' suites in a run: the checks of a version's consumers (from this home's snapshots, or
fetched from a server), their verdicts against the stable version's (did this version break them?),
the culprits among the packages that changed, and the gate's consumer section."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from imageci.app import access, inventory
from imageci.app.access import LOCAL
from imageci.app.consumers import ConsumerListArgs, ConsumerRow, consumer_list, snapshot_tree, take_snapshot
from imageci.app.operations import Asks
from imageci.app.session import Session
from imageci.app.versions import gate_of
from imageci.checks.consumer import ConsumerCheck, ConsumerSpec, consumer_digest, consumer_test_id
from imageci.definitions.runtimes import declared_runtimes
from imageci.errors import ImageciError
from imageci.policy.consumergate import ConsumerVerdict, Side, judge
from imageci.policy.sections import GateSection
from imageci.store.blobs import BlobWriter
from imageci.store.models import Attempt, State, Version, label
from imageci.store.states import as_utc
from imageci.supply.culprits import rank
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

log = logging.getLogger("imageci.app")


class ConsumerOrigin(Asks, Protocol):
    """A server whose consumers a run here (remote `test`/`pipeline`, a worker) runs (``ApiClient``)."""

    def consumer_snapshot(self, name: str, into: BlobWriter) -> None: ...


def _listed(origin: ConsumerOrigin, product: str) -> list[ConsumerRow]:
    return origin.call(consumer_list, ConsumerListArgs(product=product))


def fetched_checks(session: Session, origin: ConsumerOrigin, product: str,
                   names: list[str] | None = None) -> list[ConsumerCheck]:
    """The consumers the server has registered for ``product`` (only those named, when ``names``), as checks
    here: each snapshot fetched by digest (checked while it streams) into this home, so the evidence they
    record is keyed exactly as the server's gate reads it."""
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


def checks_for(session: Session, version: Version, names: list[str] | None = None) -> list[ConsumerCheck]:
    """The consumers of the version's product as checks (only those named, when ``names``), each from a
    snapshot taken now (the last one, with a warning, when its source is gone)."""
    out = []
    for c, _product in session.catalog.consumers(version.product.name):
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


def _side(session: Session, version: Version, test_id: str, digest: str, testbeds: list[str]) -> Side:
    """How the consumer did on ``version``'s bytes on every testbed: passed, failed, or not known."""
    by_testbed: dict[str, list[Attempt]] = {}
    for a in session.catalog.attempts(version.digest, [test_id]):
        if a.test_digest == digest:
            by_testbed.setdefault(a.testbed, []).append(a)
    failed: Attempt | None = None
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
        return Side(label(version), "failed", failed.testbed, failed.reason, failed.log_digest)
    if unknown:
        return Side(label(version), "unknown", unknown[0])
    return Side(label(version), "passed")


def _stable(session: Session, version: Version) -> Version | None:
    stable = [v for v in session.catalog.versions(version.product.name, {State.STABLE}) if v.id != version.id]
    return max(stable, key=lambda v: v.serial) if stable else None


def _culprits(session: Session, before: Version, after: Version, tree: Path, failed: Side) -> list[str]:
    try:
        a = access.resolve(session.reader, LOCAL, label(before))
        b = access.resolve(session.reader, LOCAL, label(after))
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
                f"{label(before)} {label(after)})"]
    return [f"likely cause: {c.describe()}" for c in found]


def verdicts(session: Session, version: Version) -> list[ConsumerVerdict]:
    """Each consumer of the version's product, judged on its recorded evidence: this version against the
    current stable one, on the gate's testbeds, at the consumer's newest snapshot."""
    g = gate_of(version)
    testbeds = list(g.testbeds) if g is not None else ["sandbox"]
    stable = _stable(session, version)
    out = []
    for c, _product in session.catalog.consumers(version.product.name):
        if c.snapshot is None:
            continue
        test_id, digest = consumer_test_id(c.name), consumer_digest(c.snapshot, c.command, c.setup, c.timeout)
        new = _side(session, version, test_id, digest, testbeds)
        old = _side(session, stable, test_id, digest, testbeds) if stable is not None else None
        verdict = judge(c.name, c.gating, new, old)
        if verdict.regression and stable is not None:
            verdict.culprits = _culprits(session, stable, version, snapshot_tree(session, c.snapshot), new)
        out.append(verdict)
    return out


def gate_section(session: Session, version: Version) -> GateSection | None:
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


def baseline_needed(session: Session, version: Version) -> tuple[Version, list[str]] | None:
    """The stable version and the consumers to run on it so the gate can tell a regression from a suite that
    fails anyway: those that failed on ``version`` and have no verdict on stable at their newest snapshot."""
    judged = [v for v in verdicts(session, version) if v.new.status == "failed"
              and v.old is not None and v.old.status == "unknown"]
    stable = _stable(session, version)
    if not judged or stable is None:
        return None
    return stable, [v.name for v in judged]
