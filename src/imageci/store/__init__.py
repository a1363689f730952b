"""Where everything is kept: the content-addressed blob store (``blobs``), the catalog of products,
versions, channels, runs and attempts (``catalog``, SQLAlchemy + Alembic), and the plain-SQL
readers the query commands use without the ORM (``reading``, ``lookups``). Imports the base
modules only."""
