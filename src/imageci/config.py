"""Settings: every ``IMAGECI_*`` variable, read in one place and passed down.

``IMAGECI_HOME`` (default ``$XDG_DATA_HOME/imageci``, i.e. ``~/.local/share/imageci``)
holds the catalog database, the artifact store, unpacked rootfs caches, logs
and temporary build directories, so two homes never mix. A malformed value is
a usage error that names the variable (exit 2), never a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from imageci.errors import UsageError
from imageci.owners import home_id
from imageci.sizes import parse_size

T = TypeVar("T")

# Every variable and what it sets (docs/configuration.md's table lists the same; the reproducer pins them).
VARIABLES: dict[str, str] = {
    "IMAGECI_HOME": "home: catalog, store, caches",
    "IMAGECI_DB_URL": "catalog database URL",
    "IMAGECI_JOBS": "default for -j",
    "IMAGECI_BUILD_CACHE": "finished builds by input hash, shared between homes",
    "IMAGECI_ACTOR": "who audit events and runs name",
    "IMAGECI_HOSTS": "hosts file for ssh:NAME testbeds",
    "IMAGECI_QEMU_ACCEL": "kvm, tcg or auto",
    "IMAGECI_WARM_VMS": "VMs restored ahead of time per image",
    "IMAGECI_TCG_MULTIPLIER": "test timeouts × this under TCG",
    "IMAGECI_MEMORY_BUDGET_MB": "the engine's memory budget",
    "IMAGECI_CPU_BUDGET": "the engine's CPU budget",
    "IMAGECI_MAX_UPLOAD": "the largest blob `imageci serve` accepts",
    "IMAGECI_SERVER": "the imageci server the CLI asks (see `imageci login`)",
    "IMAGECI_TOKEN": "the API token for IMAGECI_SERVER (a secret: never pinned, never printed)",
    "IMAGECI_EXECUTOR": "local or celery: where `run`/`test` run their tests",
    "IMAGECI_BROKER_URL": "the Celery broker and result backend (redis://…) for workers and --executor celery",
    "IMAGECI_VISIBILITY_TIMEOUT": "seconds before a job a dead worker held is delivered again",
    "IMAGECI_WEBHOOK_URL": "where notifications are POSTed as JSON (a blocked promotion, a new failure)",
    "IMAGECI_WEBHOOK_SECRET": "the key of the notifications' X-Imageci-Signature (HMAC-SHA256)",
    "IMAGECI_SMTP_URL": "smtp://[USER:PASSWORD@]HOST[:PORT] or smtp+starttls://…: notifications by e-mail",
    "IMAGECI_MAIL_FROM": "the notifications' From address",
    "IMAGECI_MAIL_TO": "who gets the notifications by e-mail (comma-separated)",
    "IMAGECI_CACHE_BUDGET": "the most each cache of a home (and the build cache) may hold, e.g. 20G; gc trims",
    "IMAGECI_GIT_HOSTS": "the only hosts (HOST or HOST:PORT, comma-separated) git repositories are fetched from; "
                         "unset: any host with public addresses only",
    "IMAGECI_STORE_URL": "s3://BUCKET[/PREFIX]: blobs in S3-compatible object storage (AWS_* as every AWS SDK); "
                         "unset: in the home",
    "IMAGECI_STORE_PRESIGN": "seconds a presigned download URL of the object store lives (0: through the server)",
}
# never pinned, never printed: a token, and a broker URL that may carry a password
SECRET_VARIABLES = frozenset({"IMAGECI_TOKEN", "IMAGECI_BROKER_URL", "IMAGECI_WEBHOOK_SECRET", "IMAGECI_SMTP_URL",
                              "IMAGECI_DB_URL"})
EXECUTORS = ("local", "celery")
BROKER_SCHEMES = ("redis://", "rediss://", "redis+socket://")  # Celery's Redis transport
DB_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://")
HTTP_SCHEMES = ("http://", "https://")


def default_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("IMAGECI_HOME"):
        return Path(env["IMAGECI_HOME"]).expanduser().resolve()
    xdg = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "imageci"


def _parse(env: Mapping[str, str], name: str, kind: Callable[[str], T], what: str,
           ok: Callable[[T], bool] = lambda _v: True) -> T | None:
    raw = env.get(name)
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not ok(value):
        got = "a value that is not" if name in SECRET_VARIABLES else repr(raw)  # a secret is never echoed
        raise UsageError(f"{name} must be {what} (got {got})")
    return value


def url_of(schemes: tuple[str, ...]) -> Callable[[str], str]:
    """A parser of a URL with one of ``schemes``: a host (but for ``sqlite``) and a port that is a number,
    or ValueError."""

    def parse(raw: str) -> str:
        parts = urlsplit(raw)  # ValueError: a broken IPv6 host
        if not raw.startswith(schemes) or parts.port == 0:  # .port: ValueError for a port that is no number
            raise ValueError(raw)
        if not parts.hostname and not raw.startswith(("sqlite:", "redis+socket:")):
            raise ValueError(raw)
        return raw

    return parse


def _or(value: T | None, default: T) -> T:
    return default if value is None else value


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    jobs: int
    build_cache: Path | None
    actor: str | None = None  # None: user@host
    hosts_file: Path | None = None  # None: $IMAGECI_HOME/hosts.yaml
    qemu_accel: str = "auto"  # kvm | tcg | auto
    warm_vms: int = 1
    tcg_multiplier: float = 3.0
    memory_budget_mb: int | None = None  # None: 80% of available memory
    cpu_budget: float | None = None  # None: the number of cores
    max_upload: int = 32 << 30  # bytes: the largest blob the server accepts
    server: str | None = None  # None: `imageci login`'s, else work locally
    token: str | None = field(default=None, repr=False)  # a secret
    executor: str = "local"  # local | celery
    broker_url: str | None = field(default=None, repr=False)  # redis://…: may carry a password
    visibility_timeout: int = 3600  # seconds: longer than the longest test, or a running job is delivered twice
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    smtp_url: str | None = field(default=None, repr=False)  # may carry a password
    mail_from: str | None = None
    mail_to: tuple[str, ...] = ()
    cache_budget: int = 20 << 30  # bytes each cache may hold (app/caches.py)
    git_hosts: str | None = None  # None: any host whose addresses are all public (app/egress.py)
    store_url: str | None = None  # s3://BUCKET/PREFIX: blobs in object storage; None: in the home's store/
    store_presign: int = 0  # seconds a presigned download URL lives; 0: downloads go through the server

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def rootfs_cache(self) -> Path:
        return self.home / "rootfs"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def hosts(self) -> Path:
        return self.hosts_file or self.home / "hosts.yaml"

    @property
    def home_id(self) -> str:
        """Names this home on host-wide resources (cgroups, container labels)."""
        return home_id(self.home)

    @classmethod
    def load(cls, home: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = (home or default_home(env)).resolve()
        accel = env.get("IMAGECI_QEMU_ACCEL") or "auto"
        if accel not in ("kvm", "tcg", "auto"):
            raise UsageError(f"IMAGECI_QEMU_ACCEL must be kvm, tcg or auto (got {accel!r})")
        cache, hosts = env.get("IMAGECI_BUILD_CACHE"), env.get("IMAGECI_HOSTS")
        return cls(
            home=home,
            db_url=_parse(env, "IMAGECI_DB_URL", url_of(DB_SCHEMES), "a database URL (sqlite:///PATH or "
                          "postgresql://USER@HOST[:PORT]/NAME)") or f"sqlite:///{home / 'catalog.db'}",
            jobs=_parse(env, "IMAGECI_JOBS", int, "a whole number ≥ 1", lambda v: v >= 1) or (os.cpu_count() or 1),
            build_cache=Path(cache) if cache else None,
            actor=env.get("IMAGECI_ACTOR") or None,
            hosts_file=Path(hosts) if hosts else None,
            qemu_accel=accel,
            warm_vms=_or(_parse(env, "IMAGECI_WARM_VMS", int, "a whole number ≥ 0", lambda v: v >= 0), 1),
            tcg_multiplier=_parse(env, "IMAGECI_TCG_MULTIPLIER", float, "a number > 0", lambda v: v > 0) or 3.0,
            memory_budget_mb=_parse(env, "IMAGECI_MEMORY_BUDGET_MB", int, "a whole number of MiB > 0",
                                    lambda v: v > 0),
            cpu_budget=_parse(env, "IMAGECI_CPU_BUDGET", float, "a number of CPUs > 0", lambda v: v > 0),
            max_upload=_parse(env, "IMAGECI_MAX_UPLOAD", parse_size, "a size such as 8G") or 32 << 30,
            server=_parse(env, "IMAGECI_SERVER", url_of(HTTP_SCHEMES), "an http:// or https:// URL"),
            token=env.get("IMAGECI_TOKEN") or None,
            executor=_parse(env, "IMAGECI_EXECUTOR", str, "local or celery", lambda v: v in EXECUTORS) or "local",
            broker_url=_parse(env, "IMAGECI_BROKER_URL", url_of(BROKER_SCHEMES), "a redis://HOST[:PORT][/DB] or "
                              "rediss:// URL"),
            visibility_timeout=_parse(env, "IMAGECI_VISIBILITY_TIMEOUT", int, "a whole number of seconds ≥ 10",
                                      lambda v: v >= 10) or 3600,
            webhook_url=_parse(env, "IMAGECI_WEBHOOK_URL", url_of(HTTP_SCHEMES), "an http:// or https:// URL"),
            webhook_secret=env.get("IMAGECI_WEBHOOK_SECRET") or None,
            smtp_url=_parse(env, "IMAGECI_SMTP_URL", url_of(("smtp://", "smtp+starttls://")),
                            "an smtp:// or smtp+starttls:// URL"),
            mail_from=env.get("IMAGECI_MAIL_FROM") or None,
            mail_to=tuple(a.strip() for a in (env.get("IMAGECI_MAIL_TO") or "").split(",") if a.strip()),
            git_hosts=env.get("IMAGECI_GIT_HOSTS") or None,
            cache_budget=_or(_parse(env, "IMAGECI_CACHE_BUDGET", parse_size, "a size such as 20G"), 20 << 30),
            store_url=_parse(env, "IMAGECI_STORE_URL", url_of(("s3://",)), "s3://BUCKET or s3://BUCKET/PREFIX"),
            store_presign=_or(_parse(env, "IMAGECI_STORE_PRESIGN", int, "a whole number of seconds from 0 to 604800",
                                     lambda v: 0 <= v <= 604800), 0),
        )

    def ensure(self) -> None:
        """The home's directories, made if missing; a home that cannot be used is a usage error naming
        IMAGECI_HOME (under a regular file, not writable, a read-only file system), never a traceback."""
        for d in (self.home, self.store_dir, self.tmp_dir, self.rootfs_cache, self.runs_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"IMAGECI_HOME {self.home} cannot be used: {d}: {exc.strerror or exc}") from None
            if not os.access(d, os.W_OK | os.X_OK):
                raise UsageError(f"IMAGECI_HOME {self.home} cannot be used: {d} is not writable by this user")
