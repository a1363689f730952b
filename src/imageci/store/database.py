"""Engine setup (SQLite WAL) and Alembic upgrades, refusing a catalog that is
not one: an existing file is never replaced by a new, empty catalog."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError, ProgrammingError

from imageci.errors import CatalogUnusableError, ImageciError
from imageci.store.catalogfile import HEAD, check_path, not_sqlite, restore_hint

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    tables = {r[0] for r in cur.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables or "alembic_version" in tables:  # never change a database that is not ours
        cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other databases and in-memory ones)."""
    if not url.startswith("sqlite"):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def check_file(url: str) -> None:
    """Refuse an existing file at ``url`` that cannot be a SQLite catalog."""
    path = sqlite_file(url)
    if path is not None:
        check_path(path, header=False)  # SQLite itself says "not a database" (see unusable)


def unusable(exc: DatabaseError, url: str) -> ImageciError:
    """What a database error means to the user: a damaged catalog (exit 8) or an unreachable server."""
    what = str(exc.orig).strip() if exc.orig is not None else str(exc).splitlines()[0]
    path = sqlite_file(url)
    if isinstance(exc, OperationalError) and path is None and not _schema_problem(what):
        return ImageciError(f"cannot use the catalog database: {what}")
    if path is not None and "not a database" in what:
        return not_sqlite(path)
    where = path or make_url(url).render_as_string(hide_password=True)
    return CatalogUnusableError(f"the catalog {where} is damaged ({what}). {restore_hint(path)}")


def _schema_problem(message: str) -> bool:
    return any(s in message for s in ("no such table", "no such column", "does not exist", "malformed"))


def make_engine(url: str) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    """Alembic's head, read from the migration scripts (slow: imports Alembic)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The catalog's schema revision (None: no imageci schema yet), with one query."""
    with engine.connect() as conn:
        if "alembic_version" not in inspect(conn).get_table_names():
            return None
        try:
            rows = list(conn.execute(text("SELECT version_num FROM alembic_version")))
        except ProgrammingError:
            return None
    if len(rows) > 1:
        raise CatalogUnusableError(f"the catalog has {len(rows)} schema revisions (branches), which imageci never "
                                   "writes")
    return str(rows[0][0]) if rows else None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; a no-op when it is already there. A database
    with tables but no imageci schema revision is refused, never migrated into."""
    current = current_revision(engine)
    if revision == "head" and current == HEAD:
        return
    where = sqlite_file(str(engine.url)) or engine.url.render_as_string(hide_password=True)
    if current is None:
        tables = sorted(set(inspect(engine).get_table_names()) - {"alembic_version"})
        if tables:
            raise CatalogUnusableError(f"{where} is not an imageci catalog (it has tables {', '.join(tables[:5])} "
                                       "but no imageci schema revision); point IMAGECI_DB_URL at an imageci "
                                       "catalog or at a new database")
    from alembic import command
    from alembic.util.exc import CommandError

    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except CommandError as exc:
        raise CatalogUnusableError(f"the catalog {where} has schema revision {current!r}, which this imageci does "
                                   f"not know (written by a newer imageci?): {exc}") from exc

