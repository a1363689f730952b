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
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field, model_validator

from imageci.app import access
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.operations import operation
from imageci.app.session import Session
from imageci.checks.consumerkeys import consumer_test_id
from imageci.definitions.image import NAME_RE
from imageci.definitions.runtimes import declared_runtimes
from imageci.errors import UnknownReferenceError, UsageError
from imageci.store import lookups
from imageci.store.snapshots import pack_tree, unpack_tree
from imageci.store.states import as_utc, utcnow

if TYPE_CHECKING:
    from imageci.store.models import Consumer

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
    from imageci.app import egress  # (an HTTP client: only a fetch needs it, not a gate that reads consumers)

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


def snapshot_tree(session: Session, snapshot: str) -> Path:
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
    from imageci.store.models import Consumer  # (the ORM: what a gate reading consumers never imports)

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


def snapshot_path(session: Session, name: str, *, viewer: Principal = LOCAL) -> tuple[str, Path]:
    """A consumer's newest snapshot blob (sha256, path), if ``viewer`` may see its product."""
    for c, product in session.catalog.consumers():
        if c.name != name or c.snapshot is None:
            continue
        found = next((p for p in lookups.products(session.reader) if p[0] == product), None)
        if found is not None and viewer.sees_product(found[1], found[2]) and not viewer.anonymous:
            return c.snapshot, session.store.verified_path(c.snapshot)
    raise UnknownReferenceError(f"no consumer named {name!r}")


# ---- judging -------------------------------------------------------------------------------------


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
