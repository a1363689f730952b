"""The people downstream: projects that build on a product register their suites here, every run of
the product's suite runs them too, and a gating one blocks a promotion that breaks it.

A consumer's content is a snapshot stored as a blob (``suite/`` from a directory or a git commit, and
``wheelhouse/`` when it brings one), taken again whenever a run plans it: evidence is keyed by that
snapshot and the command, so the stable version's verdict and the new one's compare the same suite.
Registering or removing one needs scope ``promote`` in the product's namespace (it decides what blocks
a promotion)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field, model_validator

from imageci.app import access, egress, inventory
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import Asks, operation
from imageci.app.session import Session
from imageci.app.versions import gate_of
from imageci.checks.consumer import ConsumerCheck, ConsumerSpec, consumer_digest, consumer_test_id
from imageci.definitions.image import NAME_RE
from imageci.definitions.runtimes import declared_runtimes
from imageci.errors import ImageciError, UnknownReferenceError, UsageError
from imageci.policy.consumergate import ConsumerVerdict, Side, judge
from imageci.policy.sections import GateSection
from imageci.store import lookups
from imageci.store.blobs import BlobWriter
from imageci.store.models import Attempt, Consumer, State, Version, label
from imageci.store.snapshots import pack_tree, unpack_tree
from imageci.store.states import as_utc, utcnow
from imageci.supply.culprits import rank
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

log = logging.getLogger("imageci.app")
DEFAULT_TIMEOUT = 600


class ConsumerRequest(BaseModel):
    name: str = Field(pattern=NAME_RE, description="the consumer's name (its test id is consumer:NAME)")
    product: str = Field(min_length=1, max_length=64, description="the image it builds on")
    suite: str | None = Field(default=None, description="a directory holding the suite (on the machine that runs "
                                                         "the tests)")
    git: str | None = Field(default=None, description="a git repository (a path or URL) holding the suite")
    ref: str | None = Field(default=None, max_length=255, description="git: the branch, tag or commit")
    subdir: str | None = Field(default=None, description="git: the suite's directory in the repository")
    command: str = Field(min_length=1, max_length=4000, description="run in the suite's directory with /bin/sh -c")
    setup: str | None = Field(default=None, max_length=4000, description="run first, e.g. installing dependencies")
    wheelhouse: str | None = Field(default=None, description="a directory of wheels: pip installs from it, offline")
    timeout: int = Field(default=DEFAULT_TIMEOUT, ge=1, le=86400, description="seconds, for setup and command each")
    gating: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ConsumerRequest:
        if (self.suite is None) == (self.git is None):
            raise ValueError("give a suite directory (--suite) or a git repository (--git with --ref), one of them")
        if self.git is not None and not self.ref:
            raise ValueError("a git repository needs --ref (a branch, tag or commit)")
        if self.git is None and (self.ref or self.subdir):
            raise ValueError("--ref and --subdir go with --git")
        if self.subdir is not None and (self.subdir.startswith("/") or ".." in Path(self.subdir).parts):
            raise ValueError("--subdir is a relative path inside the repository, without '..'")
        return self


class ConsumerRow(BaseModel):
    name: str
    product: str
    source: str  # the directory, or the repository
    ref: str | None
    subdir: str | None
    command: str
    setup: str | None
    wheelhouse: str | None
    timeout: int
    gating: bool
    test: str  # its test id: consumer:NAME
    snapshot: str | None  # sha256:… of its newest snapshot
    revision: str | None  # git: the commit of that snapshot
    snapshot_at: datetime | None
    added_by: str
    added: datetime
    removed_by: str | None = None
    removed: datetime | None = None


def _row(c: Consumer, product: str) -> ConsumerRow:
    return ConsumerRow(name=c.name, product=product, source=c.source, ref=c.ref, subdir=c.subdir, command=c.command,
                       setup=c.setup, wheelhouse=c.wheelhouse, timeout=c.timeout, gating=c.gating,
                       test=consumer_test_id(c.name), snapshot=f"sha256:{c.snapshot}" if c.snapshot else None,
                       revision=c.revision, snapshot_at=as_utc(c.snapshot_at) if c.snapshot_at else None,
                       added_by=c.created_by, added=as_utc(c.created_at), removed_by=c.removed_by,
                       removed=as_utc(c.removed_at) if c.removed_at else None)


# ---- snapshots -----------------------------------------------------------------------------------

def _git(args: list[str], what: str, env: dict[str, str] | None = None) -> bytes:
    try:
        done = subprocess.run(["git", *args], capture_output=True, timeout=600, check=False,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", **(env or {})})
    except FileNotFoundError:
        raise UsageError("git is not installed (scripts/host-setup.sh installs it)") from None
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"{what}: {err[-1] if err else f'git exited {done.returncode}'}")
    return done.stdout


def _git_tree(session: Session, repo: str, ref: str, subdir: str | None, dest: Path) -> str:
    """The repository's tree at ``ref`` (its ``subdir``) extracted into ``dest``; the commit's id."""
    if Path(repo).is_dir():
        where = ["-C", repo]
        commit = _git([*where, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}"],
                      f"{repo}: no commit {ref!r}").decode().strip()
    else:  # a URL: fetched into a bare cache of this home
        cache = session.settings.home / "consumers" / "git" / hashlib.sha256(repo.encode()).hexdigest()[:16]
        if not cache.is_dir():
            cache.parent.mkdir(parents=True, exist_ok=True)
            _git(["init", "-q", "--bare", str(cache)], f"{cache}: git init")
        where = ["-C", str(cache)]
        _fetch(session, repo, ref, where)
        commit = _git([*where, "rev-parse", "--verify", "FETCH_HEAD^{commit}"], f"{repo}: {ref!r}").decode().strip()
    tree = f"{commit}:{subdir}" if subdir else commit
    data = _git([*where, "archive", "--format=tar", tree], f"{repo}: no directory {subdir!r} at {ref}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:  # a link out of the tree, an absolute path: refused
        raise UsageError(f"{repo} at {ref}: its tree cannot be taken as a suite: {exc}") from None
    return commit


def _fetch(session: Session, repo: str, ref: str, where: list[str]) -> None:
    """``ref`` of the repository at URL ``repo`` into the bare cache, only from where the egress rule allows
    (see :mod:`egress`); any failure is one message, whatever the network said."""
    try:
        dest = egress.destination(egress.EgressPolicy.parse(session.settings.git_hosts), repo)
        scheme = dest.url.split("://", 1)[0] if "://" in dest.url else "ssh"  # after redirects (http → https)
        only = ["-c", "protocol.allow=never", "-c", f"protocol.{scheme}.allow=always"]
        depth = ["--depth", "1"] if dest.shallow else []
        _git([*only, *dest.config, *where, "fetch", "-q", *depth, "--", dest.url, ref],
             f"{repo}: fetching {ref!r}", dest.env)
    except Exception as exc:  # noqa: BLE001 - refused, unreachable, not git: the caller learns nothing more
        raise egress.fetch_refused(repo, exc) from None


def copy_dir(src: Path, dest: Path, what: str) -> None:
    """``src`` copied to ``dest`` (links as links; ``.git`` left out), or a usage error saying why not."""
    if not src.is_dir():
        raise UsageError(f"{what} {src}: no such directory")
    try:
        shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    except (OSError, shutil.Error) as exc:
        raise UsageError(f"{what} {src} cannot be copied: {exc}") from None


def take_snapshot(session: Session, c: Consumer | ConsumerRequest) -> tuple[str, str | None]:
    """The consumer's content now, stored: (snapshot digest, git commit or None)."""
    session.settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=session.settings.tmp_dir, prefix="consumer-") as tmp:
        root = Path(tmp) / "snapshot"
        root.mkdir()
        revision = None
        if isinstance(c, ConsumerRequest):
            source, ref, subdir = c.git or c.suite or "", c.ref, c.subdir
        else:
            source, ref, subdir = c.source, c.ref, c.subdir
        if ref is not None:
            revision = _git_tree(session, source, ref, subdir, root / "suite")
        else:
            copy_dir(Path(source), root / "suite", "suite")
        if c.wheelhouse:
            copy_dir(Path(c.wheelhouse), root / "wheelhouse", "wheelhouse")
        declared_runtimes(root / "suite")  # a bad constraint file is a file:line error now, not at gate time
        return pack_tree(root, session.store).digest, revision


def _tree(session: Session, snapshot: str) -> Path:
    return unpack_tree(session.store, snapshot, session.settings.home / "consumers" / "snapshots")


# ---- registering -----------------------------------------------------------------------------------

REMOTE_SCHEMES = ("https://", "http://", "ssh://", "git://")


def _remote_source(request: ConsumerRequest) -> None:
    """Over the API a consumer comes from a git repository the server fetches by URL: a path would let a token
    read the server's own files into a snapshot anyone in the namespace can download."""
    if request.suite is not None or request.wheelhouse is not None:
        raise UsageError("a directory (--suite, --wheelhouse) is read on the machine that registers it: run "
                         "`imageci consumers add` on the server's machine, or register a git repository URL "
                         "(--git https://… --ref …)")
    if not (request.git or "").startswith(REMOTE_SCHEMES):
        raise UsageError(f"over the API, --git is a repository URL ({', '.join(REMOTE_SCHEMES)}), not a path on "
                         f"the server's machine (got {request.git!r})")


def add(session: Session, request: ConsumerRequest, *, by: Principal = LOCAL) -> ConsumerRow:
    """Register a consumer of ``request.product`` (scope ``promote`` in its namespace); its first snapshot
    is taken now, so a bad source is refused here."""
    info = access.resolve(session.reader, by, request.product)
    if info.name != request.product:
        raise UnknownReferenceError(f"unknown image {request.product!r}")
    by.require(Scope.PROMOTE, info.namespace, f"register consumers of {info.name}")
    if by != LOCAL:
        _remote_source(request)
    source = request.git or request.suite or ""
    if request.suite is not None:
        source = str(Path(request.suite).resolve())
    elif Path(source).is_dir():
        source = str(Path(source).resolve())
    wheelhouse = str(Path(request.wheelhouse).resolve()) if request.wheelhouse else None
    snapshot, revision = take_snapshot(session, request.model_copy(update={"wheelhouse": wheelhouse}))
    row = session.catalog.add_consumer(Consumer(
        name=request.name, source=source, ref=request.ref, subdir=request.subdir, command=request.command,
        setup=request.setup, wheelhouse=wheelhouse, timeout=request.timeout, gating=request.gating,
        snapshot=snapshot, revision=revision, snapshot_at=utcnow(),
        created_by=session.catalog.actor if by == LOCAL else by.name, created_at=utcnow()), info.name)
    return _row(row, info.name)


def remove(session: Session, name: str, *, by: Principal = LOCAL) -> ConsumerRow:
    """Remove a consumer (scope ``promote``); its row is kept, marked removed."""
    found = {c.name: (c, p) for c, p in session.catalog.consumers()}
    if name not in found:
        raise UnknownReferenceError(f"no consumer named {name!r}")
    product = next((p for p in lookups.products(session.reader) if p[0] == found[name][1]), None)
    if product is None or not by.sees_product(product[1], product[2]):
        raise UnknownReferenceError(f"no consumer named {name!r}")
    by.require(Scope.PROMOTE, product[1], f"remove consumer {name}")
    row = session.catalog.remove_consumer(name, actor=session.catalog.actor if by == LOCAL else by.name)
    return _row(row, found[name][1])


def listing(session: Session, product: str | None = None, *, removed: bool = False,
            viewer: Principal = LOCAL) -> list[ConsumerRow]:
    """The consumers of the products ``viewer`` may see (of ``product``); none without a token (a public
    product's consumers are its namespace's business)."""
    visible = {n for n, ns, pub, _c in lookups.products(session.reader)
               if viewer.sees_product(ns, pub) and not viewer.anonymous}
    if product is not None and product not in visible:
        raise UnknownReferenceError(f"unknown image {product!r}")
    return [_row(c, p) for c, p in session.catalog.consumers(product, removed=removed) if p in visible]


# ---- running -------------------------------------------------------------------------------------

class ConsumerOrigin(Asks, Protocol):
    """A server whose consumers a run here (remote `test`/`pipeline`, a worker) runs (``ApiClient``)."""

    def consumer_snapshot(self, name: str, into: BlobWriter) -> None: ...


def snapshot_path(session: Session, name: str, *, viewer: Principal = LOCAL) -> tuple[str, Path]:
    """A consumer's newest snapshot blob (sha256, path), if ``viewer`` may see its product."""
    for c, product in session.catalog.consumers():
        if c.name != name or c.snapshot is None:
            continue
        found = next((p for p in lookups.products(session.reader) if p[0] == product), None)
        if found is not None and viewer.sees_product(found[1], found[2]) and not viewer.anonymous:
            return c.snapshot, session.store.verified_path(c.snapshot)
    raise UnknownReferenceError(f"no consumer named {name!r}")


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
        out.append(ConsumerCheck(ConsumerSpec(name=row.name, tree=_tree(session, digest), command=row.command,
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
        out.append(ConsumerCheck(ConsumerSpec(name=c.name, tree=_tree(session, snapshot), command=c.command,
                                              setup=c.setup, timeout=c.timeout, snapshot=snapshot, gating=c.gating)))
    return out


# ---- judging -------------------------------------------------------------------------------------

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
            verdict.culprits = _culprits(session, stable, version, _tree(session, c.snapshot), new)
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


class ConsumerListArgs(BaseModel):
    product: str | None = None
    removed: bool = False


class ConsumerAddArgs(BaseModel):
    body: ConsumerRequest


class ConsumerName(BaseModel):
    name: str = Field(pattern=NAME_RE)


@operation("GET", "/consumers", request=ConsumerListArgs, answer=list[ConsumerRow], tag="images",
           name="consumer_list")
def consumer_list(session: Session, req: ConsumerListArgs, by: Principal) -> list[ConsumerRow]:
    """The consumers registered for the products the caller may see (removed ones too with ``removed``)."""
    return listing(session, req.product, removed=req.removed, viewer=by)


@operation("POST", "/consumers", request=ConsumerAddArgs, answer=ConsumerRow, tag="images", status=201,
           needs_token=True, name="consumer_add")
def consumer_add(session: Session, req: ConsumerAddArgs, by: Principal) -> ConsumerRow:
    """Register a consumer of a product (scope ``promote`` in its namespace): its suite (a directory or git
    repository as this server's machine reaches it) runs with every run of the product's suite here; a
    gating one blocks a promotion that breaks it."""
    return add(session, req.body, by=by)


@operation("DELETE", "/consumers/{name}", request=ConsumerName, answer=ConsumerRow, tag="images",
           needs_token=True, name="consumer_remove")
def consumer_remove(session: Session, req: ConsumerName, by: Principal) -> ConsumerRow:
    """Remove a consumer (scope ``promote``); it stays listed with ``removed``."""
    return remove(session, req.name, by=by)
