"""Benchmark: `imageci serve` on 127.0.0.1, over a catalog seeded with
1,000,000 attempts across 500 versions (as bench/queries_at_scale.py).

- ingestion: 8 concurrent clients record attempts (each with its own
  idempotency key and a small log) into one run, one POST per attempt and
  then in batches of 50 (what a reporting client sends); attempts/s and
  p50/p99 latency per request. Target ≥ 500 attempts/s on SQLite.
- results: `GET /api/v1/images/REF/results` over HTTP (keep-alive client) and
  `app.queries.results` in process, p50. Target ≤ 50 ms.
- download: a 256 MiB artifact fetched with curl from imageci vs from
  `python3 -m http.server` (a plain static file server) serving the same
  file, best of 3 each. Target ratio ≥ 0.8.

The single-POST ingestion runs again against `imageci serve --workers 2`.

Last line: `server: ingestion N attempts/s in batches of 50 (S/s one POST
each, W/s with 2 workers; 8 clients); results p50 HTTP C ms, in process D ms;
download E MB/s vs F MB/s static (ratio R)`.
"""

from __future__ import annotations

import argparse
import atexit
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import pct, sized  # noqa: E402
from queries_at_scale import seed  # noqa: E402

from imageci.app import queries, tokens  # noqa: E402
from imageci.app.access import LOCAL  # noqa: E402
from imageci.app.session import Session  # noqa: E402
from imageci.config import Settings  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.store.catalog import NewArtifact  # noqa: E402

API = "/api/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}") from None
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def ingest(url: str, token: str, ref: str, clients: int, per_client: int,
           batch: int = 1) -> tuple[float, list[float]]:
    auth = {"Authorization": f"Bearer {token}"}
    run = httpx.post(f"{url}{API}/images/{ref}/runs", json={"tests": []}, headers=auth, timeout=60).json()["run"]

    def client(c: int) -> list[float]:
        lat = []
        with httpx.Client(base_url=url, headers=auth, timeout=60) as http:
            bodies = [{"test": f"bench-{c}-{i}", "test_digest": "d", "testbed": "remote", "attempt": 1,
                       "started": "2026-11-23T10:00:00Z", "ended": "2026-11-23T10:00:01Z", "exit_code": 0,
                       "verdict": "pass", "log": f"ok {c} {i}\n", "key": f"bench-{run}-{batch}-{c}-{i}"}
                      for i in range(per_client)]
            for i in range(0, per_client, batch):
                t0 = time.monotonic()
                if batch == 1:
                    r = http.post(f"{API}/runs/{run}/attempts", json=bodies[i])
                    ok = r.status_code == 201
                else:
                    r = http.post(f"{API}/runs/{run}/attempts/batch", json=bodies[i:i + batch])
                    ok = r.status_code == 200
                lat.append(time.monotonic() - t0)
                if not ok:
                    raise SystemExit(f"attempt refused: {r.status_code} {r.text}")
        return lat

    t0 = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [x for part in pool.map(client, range(clients)) for x in part]
    return time.monotonic() - t0, latencies


def curl_speed(url: str, headers: list[str]) -> float:
    """Bytes per second of one curl download (to /dev/null)."""
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download}", *headers, url],
                         capture_output=True, text=True, check=True)
    return float(out.stdout)


def _setup(args: argparse.Namespace) -> tuple[Path, str, str, str, list[float]]:
    """A home seeded with ``args.attempts`` attempts and a download of ``args.download_mib`` MiB: (home, the
    seeded reference, an admin token, the download's serial, in-process results latencies)."""
    home = Path(tempfile.mkdtemp(prefix="imageci-bench-server-"))
    atexit.register(safe_rmtree, home)  # however the benchmark ends
    ref, _digest = seed(home, 500, 100, args.attempts // 500)
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=2, build_cache=None)
    session = Session.open(settings)
    token = tokens.create(session, "bench", "default", "admin", by=LOCAL).secret
    blob_file = home / "payload.bin"
    with blob_file.open("wb") as fh:
        for _ in range(args.download_mib):
            fh.write(secrets.token_bytes(1 << 20))
    blob = session.store.put_file(blob_file)
    big = session.catalog.register_version("download", blob.digest, [NewArtifact("rootfs", "rootfs.tar", blob.digest,
                                                                                 blob.size)],
                                           input_hash=None, definition="name: download\nsuite: bookworm\n",
                                           build_info={})
    local = []
    for _ in range(21):
        t0 = time.monotonic()
        queries.results(session, ref)
        local.append(time.monotonic() - t0)
    session.close()
    return home, ref, token, big.serial, local


def _serve(env: dict[str, str], *extra: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "imageci.cli", "serve", "--listen", f"127.0.0.1:{port}",
                               *extra], env=env, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{port}/healthz", server)
    return f"http://127.0.0.1:{port}", server


def _results_latency(url: str, token: str, ref: str) -> tuple[list[float], int]:
    lat = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        for _ in range(21):
            t0 = time.monotonic()
            r = http.get(f"{API}/images/{ref}/results")
            lat.append(time.monotonic() - t0)
            r.raise_for_status()
    return lat, len(r.json()["attempts"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=sized(1_000_000, 1_000), help="seeded into the catalog")
    ap.add_argument("--clients", type=int, default=sized(8, 2))
    ap.add_argument("--per-client", type=int, default=sized(250, 5))
    ap.add_argument("--download-mib", type=int, default=sized(256, 1))
    args = ap.parse_args()
    home, ref, token, serial, local = _setup(args)
    env = {**os.environ, "IMAGECI_HOME": str(home)}
    env.pop("IMAGECI_DB_URL", None)
    url, server = _serve(env)
    static_port = free_port()
    static = subprocess.Popen([sys.executable, "-m", "http.server", str(static_port), "--bind", "127.0.0.1",
                               "--directory", str(home)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{static_port}/", static)
        n = args.clients * args.per_client
        wall, lat = ingest(url, token, "download:testing", args.clients, args.per_client)
        single = n / wall
        print(f"ingestion, a POST per attempt: {n} attempts from {args.clients} clients in {wall:.2f}s = "
              f"{single:.0f} attempts/s; p50 {pct(lat, 50) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms")
        wall, lat = ingest(url, token, "download:testing", args.clients, args.per_client, batch=50)
        rate = n / wall
        print(f"ingestion, batches of 50: {n} attempts in {wall:.2f}s = {rate:.0f} attempts/s; "
              f"p50 {pct(lat, 50) * 1000:.1f} ms, p99 {pct(lat, 99) * 1000:.1f} ms per batch")
        http_lat, count = _results_latency(url, token, ref)
        print(f"results of {ref} ({count} attempts): HTTP p50 {pct(http_lat, 50) * 1000:.1f} ms, "
              f"in process p50 {pct(local, 50) * 1000:.1f} ms")
        ours = max(curl_speed(f"{url}{API}/images/download@{serial}/artifacts/rootfs.tar",
                              ["-H", f"Authorization: Bearer {token}"]) for _ in range(3))
        plain = max(curl_speed(f"http://127.0.0.1:{static_port}/payload.bin", []) for _ in range(3))
        print(f"download of {args.download_mib} MiB: imageci {ours / 1e6:.0f} MB/s, python -m http.server "
              f"{plain / 1e6:.0f} MB/s")
        server.terminate()
        server.wait(timeout=30)
        url2, server = _serve(env, "--workers", "2")
        wall, lat2 = ingest(url2, token, "download:testing", args.clients, args.per_client)
        workers2 = n / wall
        print(f"ingestion, a POST per attempt, `serve --workers 2`: {workers2:.0f} attempts/s; "
              f"p50 {pct(lat2, 50) * 1000:.1f} ms, p99 {pct(lat2, 99) * 1000:.1f} ms")
        print(f"server: ingestion {rate:.0f} attempts/s in batches of 50 ({single:.0f}/s one POST each, "
              f"{workers2:.0f}/s with 2 workers; {args.clients} clients); results p50 HTTP "
              f"{pct(http_lat, 50) * 1000:.1f} ms, in process {pct(local, 50) * 1000:.1f} ms; download "
              f"{ours / 1e6:.0f} MB/s vs {plain / 1e6:.0f} MB/s static (ratio {ours / plain:.2f})")
    finally:
        for p in (server, static):
            p.terminate()
            p.wait(timeout=30)


if __name__ == "__main__":
    main()
