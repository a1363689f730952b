"""An imageci server for tests: `imageci serve` on a free 127.0.0.1 port over a seeded home, stopped
with SIGTERM (and required to shut down cleanly); tokens made on its home."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from imageci.app import tokens
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.config import Settings
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import Attempt, State
from imageci.store.states import utcnow

from conftest import free_port

API = "/api/v1"


@dataclass
class Server:
    url: str
    home: Path
    settings: Settings
    proc: subprocess.Popen[bytes]

    def get(self, path: str, token: str | None = None, headers: dict[str, str] | None = None,
            **kw: object) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(self.url + path, headers={**auth, **(headers or {})}, timeout=30, **kw)  # type: ignore[arg-type]


def _seed(cat: Catalog) -> None:
    """infra-base (private, namespace infra; one stable, one testing), team-app (private, namespace apps),
    public-base (public, namespace infra). Each version has one run with a flaky test."""
    plan = [("infra-base", "infra", False, ["a", "b"]), ("team-app", "apps", False, ["c"]),
            ("public-base", "infra", True, ["d"])]
    for name, namespace, public, digests in plan:
        for d in digests:
            v = cat.register_version(name, d * 64, [NewArtifact("rootfs", "rootfs.tar", d * 64, 10)],
                                     input_hash=None, definition=f"name: {name}\nsuite: bookworm\n", build_info={},
                                     actor="seed")
            run = cat.start_run(v.digest, v.id, {"tests": ["smoke"]})
            for n, verdict in enumerate(("fail", "pass"), 1):
                now = utcnow()
                cat.record_attempt(Attempt(run_id=run, image_digest=v.digest, test_id="smoke", test_digest="t",
                                           testbed="sandbox", attempt=n, started_at=now, ended_at=now,
                                           exit_code=0 if verdict == "pass" else 1, verdict=verdict, reason=""))
            cat.finish_run(run, 0)
        cat.set_product(name, namespace=namespace, public=public)
    cat.transition(cat.resolve("infra-base@" + cat.versions("infra-base")[0].serial).id, State.STABLE,
                   actor="seed", reason="test")


def start_server(home: Path, db_url: str | None = None, *args: str, seed: bool = True,
                 **extra_env: str) -> Iterator[Server]:
    """`imageci serve` on a free 127.0.0.1 port over ``home`` (seeded unless ``seed`` is false: the seed's
    artifacts have no blobs), stopped with SIGTERM."""
    settings = Settings(home=home, db_url=db_url or f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    settings.ensure()
    if seed:
        cat = Catalog.open(settings.db_url)
        _seed(cat)
        cat.close()
    port = free_port()
    env = {**os.environ, "IMAGECI_HOME": str(home), **extra_env}
    env.pop("IMAGECI_DB_URL", None)
    if db_url:
        env["IMAGECI_DB_URL"] = db_url
    proc = subprocess.Popen([sys.executable, "-m", "imageci.cli", "serve", "--listen", f"127.0.0.1:{port}", *args],
                            env=env, stdout=subprocess.PIPE, stderr=open(home / "server.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (home / "server.log").read_text()
        assert time.monotonic() < deadline, "the server did not answer within 60 s"
        time.sleep(0.2)
    try:
        yield Server(url, home, settings, proc)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0  # graceful shutdown on SIGTERM


def _token(server: Server, name: str, namespace: str, scopes: str, **kw: object) -> str:
    s = Session.open(server.settings)
    try:
        return tokens.create(s, name, namespace, scopes, by=LOCAL, **kw).secret  # type: ignore[arg-type]
    finally:
        s.close()


def put_blob(server: Server, token: str, data: bytes, digest: str | None = None, **headers: str) -> httpx.Response:
    d = digest or hashlib.sha256(data).hexdigest()
    return httpx.put(f"{server.url}{API}/blobs/sha256:{d}", content=data, timeout=30,
                     headers={"Authorization": f"Bearer {token}", **headers})


def leftovers(server: Server) -> list[Path]:
    return list((server.settings.store_dir / "tmp").iterdir())
