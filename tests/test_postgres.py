"""The catalog against a real PostgreSQL server started by the fixture."""

from __future__ import annotations

from sqlalchemy import text

from imageci.store import database
from imageci.store.catalog import Catalog

from test_catalog import exercise_catalog


def test_catalog_on_postgresql(postgres_url: str) -> None:
    cat = Catalog.open(postgres_url)
    assert cat.engine.dialect.name == "postgresql"
    assert database.current_revision(cat.engine) == database.head_revision()
    exercise_catalog(cat)
    with cat.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM events")).scalar() >= 5
    cat.close()
    again = Catalog.open(postgres_url)  # reopening does not re-run migrations or lose data
    assert again.resolve("demo:stable").state == "stable"
    again.close()


def test_lookups_on_postgresql(postgres_url: str) -> None:
    """The query operations' SQL (store.lookups) says the same on PostgreSQL as on SQLite."""
    from test_lookups import answers, check_answers, seed

    admin = database.make_engine(postgres_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CREATE DATABASE lookups"))
    admin.dispose()
    cat = Catalog.open(postgres_url.rsplit("/", 1)[0] + "/lookups")
    refs = seed(cat)
    check_answers(answers(cat.reader(), refs), refs)
    cat.close()
