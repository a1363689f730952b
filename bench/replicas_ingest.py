"""Benchmark: result ingestion from 8 clients into `imageci serve` on PostgreSQL,
one replica vs two replicas (two processes on one database; each client talks
to one replica, the clients split evenly), in the same run.

Each client records attempts one POST each (its own idempotency key, a small
log). Reported: attempts/s for each set-up, their ratio, and each replica's
p99 latency per request (target ≤ 100 ms). On this 2-core machine both replicas
and PostgreSQL share the cores: the ratio says what a second replica costs or
gains here, not on two machines.

Last line: `replicas: 2 replicas N attempts/s vs 1 replica M attempts/s (ratio
R, 8 clients); p99 A ms (1 replica), B / C ms (2 replicas)`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from common import pct, sized  # noqa: E402

from imageci.fs import safe_rmtree  # noqa: E402

from pgkit import database, postgres  # noqa: E402
from serverkit import API, Server, _token, start_server  # noqa: E402

CLIENTS = 8


def ingest(replicas: list[Server], token: str, per_client: int, tag: str) -> tuple[float, list[list[float]]]:
    """Seconds for ``CLIENTS`` clients to record ``per_client`` attempts each into one run, client c through
    replica c mod n; each replica's request latencies."""
    auth = {"Authorization": f"Bearer {token}"}
    run = httpx.post(f"{replicas[0].url}{API}/images/infra-base:testing/runs", json={"tests": []}, headers=auth,
                     timeout=60).json()["run"]

    def client(c: int) -> list[float]:
        lat = []
        with httpx.Client(base_url=replicas[c % len(replicas)].url, headers=auth, timeout=60) as http:
            for i in range(per_client):
                body = {"test": f"{tag}-{c}-{i}", "test_digest": "d", "testbed": "remote", "attempt": 1,
                        "started": "2026-11-23T10:00:00Z", "ended": "2026-11-23T10:00:01Z", "exit_code": 0,
                        "verdict": "pass", "log": f"ok {c} {i}\n"}
                t0 = time.monotonic()
                r = http.post(f"{API}/runs/{run}/attempts", json=body,
                              headers={"Idempotency-Key": f"bench-{tag}-{c}-{i}"})
                lat.append(time.monotonic() - t0)
                if r.status_code != 201:
                    raise SystemExit(f"attempt refused: {r.status_code} {r.text}")
        return lat

    t0 = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        per_client_lat = list(pool.map(client, range(CLIENTS)))
    took = time.monotonic() - t0
    return took, [[x for c, lat in enumerate(per_client_lat) if c % len(replicas) == r for x in lat]
                  for r in range(len(replicas))]


def main() -> None:
    per_client = sized(250, 10)
    tmp = Path(tempfile.mkdtemp(prefix="imageci-bench-replicas-"))
    try:
        with postgres() as url:
            db = database(url, "replicas_bench")
            first = start_server(tmp / "a", db)  # seeded: infra-base to record into
            a = next(first)
            second = start_server(tmp / "b", db, seed=False)
            b = next(second)
            token = _token(a, "bench-ingest", "infra", "test")
            ingest([a], token, 2, "warm")
            one, (lat1,) = ingest([a], token, per_client, "one")
            two, (lat_a, lat_b) = ingest([a, b], token, per_client, "two")
            for running in (second, first):
                next(running, None)
        n = CLIENTS * per_client
        r1, r2 = n / one, n / two
        print(f"{n} attempts from {CLIENTS} clients, one POST each, on PostgreSQL")
        print(f"replicas: 2 replicas {r2:.0f} attempts/s vs 1 replica {r1:.0f} attempts/s (ratio {r2 / r1:.2f}, "
              f"{CLIENTS} clients); p99 {pct(lat1, 99) * 1000:.0f} ms (1 replica), "
              f"{pct(lat_a, 99) * 1000:.0f} / {pct(lat_b, 99) * 1000:.0f} ms (2 replicas)")
    finally:
        safe_rmtree(tmp)


if __name__ == "__main__":
    main()
