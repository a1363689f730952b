"""Benchmark: generating a channel's LXD/Incus simplestreams feed over a catalog
with 500 versions that have their LXD form (10 products × 50 versions, half
of them promoted), SQLite, the embedded default.

- in process: ``app.feeds.lxd_feed`` + ``build.simplestreams.images`` +
  JSON, p50 of 21, for the ``testing`` channel (all 500 versions) and
  ``stable`` (250);
- over HTTP: ``GET /lxd/default/testing/TOKEN/streams/v1/images.json`` from
  ``imageci serve`` on 127.0.0.1 (keep-alive client), p50 of 21.

Target (issue 11): ≤ 100 ms for 500 versions.
Last line: `feed (500 versions): in process testing X ms, stable Y ms p50; HTTP Z ms p50; N KiB`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct, sized  # noqa: E402
from server_api import free_port, wait_for  # noqa: E402

from imageci.app import feeds, tokens  # noqa: E402
from imageci.app.access import LOCAL  # noqa: E402
from imageci.app.session import Session  # noqa: E402
from imageci.config import Settings  # noqa: E402
from imageci.formats import simplestreams  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.store.catalog import Catalog, NewArtifact  # noqa: E402
from imageci.store.models import State  # noqa: E402


def seed(home: Path, products: int = 10, per_product: int = 50) -> None:
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=2, build_cache=None)
    settings.ensure()
    catalog = Catalog.open(settings.db_url)
    for p in range(products):
        name = f"product-{p:02d}"
        for v in range(per_product):
            digest = f"{p:032x}{v:032x}"
            meta, squash = f"{p:031x}1{v:032x}", f"{p:031x}2{v:032x}"
            version = catalog.register_version(
                name, digest, [NewArtifact("rootfs", "rootfs.tar", digest, 1 << 28),
                               NewArtifact("lxd-metadata", "lxd.tar.xz", meta, 400),
                               NewArtifact("incus-metadata", "incus.tar.xz", meta, 400),
                               NewArtifact("squashfs", "root.squashfs", squash, 1 << 26)],
                input_hash=None, definition=None,
                build_info={"lxd": {"os": "Debian", "release": "bookworm", "variant": name,
                                    "fingerprint": f"{p:031x}3{v:032x}"}})
            if v % 2 == 0:
                catalog.transition(version.id, State.STABLE, actor="bench", reason="seed")
    catalog.close()


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="imageci-bench-feed-"))
    seed(home, sized(10, 2), sized(50, 3))
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=2, build_cache=None)
    session = Session.open(settings)
    token = tokens.create(session, "bench", "default", "read", by=LOCAL).secret
    timings: dict[str, list[float]] = {"testing": [], "stable": []}
    size = 0
    for channel, took in timings.items():
        for _ in range(sized(21, 2)):
            t0 = time.monotonic()
            body = json.dumps(simplestreams.images(feeds.lxd_feed(session, "default", channel, by=LOCAL)))
            took.append(time.monotonic() - t0)
            size = max(size, len(body))
        versions = sum(len(p["versions"]) for p in json.loads(body)["products"].values())
        print(f"{channel}: {versions} versions, p50 {pct(took, 50) * 1000:.1f} ms, p99 {pct(took, 99) * 1000:.1f} ms")
    session.close()
    port = free_port()
    env = {**os.environ, "IMAGECI_HOME": str(home)}
    env.pop("IMAGECI_DB_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "imageci.cli", "serve", "--listen", f"127.0.0.1:{port}"],
                              env=env, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/healthz", server)
        http: list[float] = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(sized(21, 2)):
                t0 = time.monotonic()
                r = client.get(f"/lxd/default/testing/{token}/streams/v1/images.json")
                http.append(time.monotonic() - t0)
                r.raise_for_status()
        print(f"HTTP: p50 {pct(http, 50) * 1000:.1f} ms, {len(r.content) // 1024} KiB")
        print(f"feed (500 versions): in process testing {pct(timings['testing'], 50) * 1000:.1f} ms, stable "
              f"{pct(timings['stable'], 50) * 1000:.1f} ms p50; HTTP {pct(http, 50) * 1000:.1f} ms p50; "
              f"{size // 1024} KiB")
    finally:
        server.terminate()
        server.wait(timeout=30)
        safe_rmtree(home)


if __name__ == "__main__":
    main()
