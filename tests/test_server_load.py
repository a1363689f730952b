"""Recording under load: many clients at once lose nothing and count retries once, on SQLite and
PostgreSQL, with several worker processes; SIGTERM lets an upload in flight finish."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text as sqltext

from imageci.store import database

from serverkit import API, Server, _token, leftovers, start_server


def _ingest(server: Server, token: str, ref: str, clients: int = 8, per_client: int = 25) -> int:
    """``clients`` threads record ``per_client`` attempts each into one run, every POST sent twice with
    the same idempotency key (a retry); returns the run id."""
    from concurrent.futures import ThreadPoolExecutor

    auth = {"Authorization": f"Bearer {token}"}
    started = httpx.post(f"{server.url}{API}/images/{ref}/runs", json={"tests": ["t"]},
                         headers={**auth, "Idempotency-Key": f"run-{ref}-{token[-8:]}"})
    assert started.status_code == 201, started.text
    again = httpx.post(f"{server.url}{API}/images/{ref}/runs", json={"tests": ["t"]},
                       headers={**auth, "Idempotency-Key": f"run-{ref}-{token[-8:]}"})
    assert again.status_code == 200 and again.json()["run"] == started.json()["run"]
    run = started.json()["run"]
    errors: list[str] = []

    def client(c: int) -> list[int]:
        codes = []
        with httpx.Client(base_url=server.url, headers=auth, timeout=60) as http:
            for i in range(per_client):
                body = {"test": f"t{c:02d}-{i:03d}", "test_digest": "d", "testbed": "laptop", "attempt": 1,
                        "started": "2026-11-23T10:00:00Z", "ended": "2026-11-23T10:00:01Z", "exit_code": 0,
                        "verdict": "pass", "log": f"log of {c}/{i}"}
                for _retry in range(2):
                    r = http.post(f"{API}/runs/{run}/attempts", json=body,
                                  headers={"Idempotency-Key": f"attempt-{run}-{c}-{i}"})
                    codes.append(r.status_code)
                    if r.status_code >= 400:
                        errors.append(r.text)
        return codes

    with ThreadPoolExecutor(clients) as pool:
        codes = [code for result in pool.map(client, range(clients)) for code in result]
    assert codes.count(201) == clients * per_client and codes.count(200) == clients * per_client, errors[:3]
    return int(run)


def test_many_clients_recording_at_once_lose_nothing_and_retries_count_once(server: Server) -> None:
    tester = _token(server, "ingest-tester", "infra", "test")
    run = _ingest(server, tester, "infra-base:testing")
    res = server.get(f"{API}/images/infra-base:testing/results", tester).json()
    mine = [a for a in res["attempts"] if a["run"] == run]
    assert len(mine) == 8 * 25 and len({a["test"] for a in mine}) == 200
    assert all(a["log"] for a in mine)
    finished = httpx.post(f"{server.url}{API}/runs/{run}/finish", json={"exit_code": 0},
                          headers={"Authorization": f"Bearer {tester}"})
    assert finished.json() == {"run": run, "status": "finished", "exit_code": 0}
    late = httpx.post(f"{server.url}{API}/runs/{run}/attempts", headers={"Authorization": f"Bearer {tester}"},
                      json={"test": "late", "test_digest": "d", "testbed": "x", "attempt": 1, "verdict": "pass",
                            "started": "2026-11-23T10:00:00Z", "ended": "2026-11-23T10:00:01Z"})
    assert late.status_code == 400 and "takes no more attempts" in late.json()["error"]
    run_row = [r for r in res["runs"] if r["run"] == run][0]
    assert run_row["actor"] == "ingest-tester"
    other = _token(server, "ingest-apps", "apps", "test")
    assert httpx.post(f"{server.url}{API}/runs/{run}/finish", json={"exit_code": 0},
                      headers={"Authorization": f"Bearer {other}"}).status_code == 404  # not its namespace
    reader = _token(server, "ingest-reader", "infra", "read")
    assert httpx.post(f"{server.url}{API}/images/infra-base:testing/runs", json={},
                      headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    bad = httpx.post(f"{server.url}{API}/images/infra-base:testing/runs", json={},
                     headers={"Authorization": f"Bearer {tester}", "Idempotency-Key": "no spaces allowed"})
    assert bad.status_code == 400


@pytest.mark.postgres
def test_recording_at_once_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    admin = database.make_engine(postgres_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sqltext("CREATE DATABASE ingest"))
    admin.dispose()
    for server in start_server(tmp_path / "home", db_url=postgres_url.rsplit("/", 1)[0] + "/ingest"):
        tester = _token(server, "pg-tester", "infra", "test")
        run = _ingest(server, tester, "infra-base:testing")
        res = server.get(f"{API}/images/infra-base:testing/results", tester).json()
        assert len([a for a in res["attempts"] if a["run"] == run]) == 200


def test_several_worker_processes_serve_one_catalog(tmp_path: Path) -> None:
    running = start_server(tmp_path / "home", None, "--workers", "2")
    server = next(running)
    try:
        tester = _token(server, "workers-tester", "infra", "test")
        run = _ingest(server, tester, "infra-base:testing", clients=4, per_client=10)  # each POST sent twice
        after = server.get(f"{API}/images/infra-base:testing/results", tester).json()["attempts"]
        assert len([a for a in after if a["run"] == run]) == 40  # retries counted once across processes
        pids = {server.get("/healthz").headers.get("x-request-id") for _ in range(5)}
        assert len(pids) == 5  # every response carries its own request id, whichever process answered
    finally:
        with pytest.raises(StopIteration):
            next(running)  # SIGTERM: both workers stop, the server exits 0


def test_sigterm_lets_an_upload_in_flight_finish(tmp_path: Path) -> None:
    import signal
    import threading

    running = start_server(tmp_path / "home")
    server = next(running)
    pub = _token(server, "term-pub", "infra", "publish")
    chunks = [b"a" * 65536, b"b" * 65536, b"c" * 65536]
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    sent = threading.Event()

    def slowly() -> Iterator[bytes]:
        yield chunks[0]
        sent.set()
        time.sleep(1.5)
        yield from chunks[1:]

    result: dict[str, httpx.Response] = {}

    def upload() -> None:
        result["r"] = httpx.put(f"{server.url}{API}/blobs/sha256:{digest}", content=slowly(), timeout=60,
                                headers={"Authorization": f"Bearer {pub}", "Content-Length": str(3 * 65536)})

    worker = threading.Thread(target=upload)
    worker.start()
    assert sent.wait(10)
    server.proc.send_signal(signal.SIGTERM)
    worker.join(30)
    assert result["r"].status_code == 201, result["r"].text
    assert server.settings.store_dir.joinpath("blobs", "sha256", digest[:2], digest).is_file()
    assert leftovers(server) == []
    with pytest.raises(StopIteration):
        next(running)  # the fixture's side: the server exits 0 after SIGTERM


def test_a_batch_of_attempts_is_recorded_once_however_often_it_is_sent(server: Server) -> None:
    tester = _token(server, "batch-tester", "infra", "test")
    auth = {"Authorization": f"Bearer {tester}"}
    run = httpx.post(f"{server.url}{API}/images/infra-base:testing/runs", json={}, headers=auth).json()["run"]
    batch = [{"test": f"b{i}", "test_digest": "d", "testbed": "laptop", "attempt": 1, "verdict": "pass",
              "started": "2026-11-23T10:00:00Z", "ended": "2026-11-23T10:00:01Z", "key": f"batch-{run}-{i}"}
             for i in range(50)]
    first = httpx.post(f"{server.url}{API}/runs/{run}/attempts/batch", json=batch, headers=auth, timeout=60)
    assert first.status_code == 200 and all(r["created"] for r in first.json())
    again = httpx.post(f"{server.url}{API}/runs/{run}/attempts/batch", json=batch[:10] + [
        {**batch[0], "test": "new", "key": f"batch-{run}-new"}], headers=auth, timeout=60)
    assert [r["created"] for r in again.json()] == [False] * 10 + [True]
    assert [r["id"] for r in again.json()[:10]] == [r["id"] for r in first.json()[:10]]
    twice = httpx.post(f"{server.url}{API}/runs/{run}/attempts/batch", json=[batch[0], batch[0]], headers=auth)
    assert twice.status_code == 400 and "share an idempotency key" in twice.json()["error"]
    huge = httpx.post(f"{server.url}{API}/runs/{run}/attempts/batch", json=[batch[0]] * 1001, headers=auth,
                      timeout=60)
    assert 400 <= huge.status_code < 500
    res = server.get(f"{API}/images/infra-base:testing/results", tester).json()
    assert len([a for a in res["attempts"] if a["run"] == run]) == 51
