"""A private PostgreSQL server on 127.0.0.1 (Debian's, run as the postgres user when we are root), for
the tests and the benchmarks that need a database server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from imagekit import require_tool


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """Start one; its URL (database ``postgres``, user ``postgres``, trust on loopback); stopped and removed after."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    require_tool(bool(bins), "PostgreSQL")
    bindir = bins[-1].parent
    base = Path(tempfile.mkdtemp(prefix="imageci-pg-"))
    data = base / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(base, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def database(url: str, name: str) -> str:
    """A new, empty database on the PostgreSQL server of ``url`` (dropped first if it was there): its URL."""
    from sqlalchemy import text

    from imageci.store.database import make_engine

    engine = make_engine(url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{url.rsplit('/', 1)[0]}/{name}"
