"""Celery workers against the real things: Debian's redis-server on 127.0.0.1
(broker and result backend, appendonly), `imageci serve`, and `imageci worker`
processes with their own homes and different capability sets — routing by
architecture (an arm64 image runs on the worker that offers arch:arm64, through
qemu-user), a job no live worker can take shown as waiting, kill -9 of a worker
mid-test, a broker restart and a server restart mid-run, and the same verdicts
as the local executor."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from imageci.app import tokens
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.config import Settings

from conftest import REPO, busybox_rootfs, free_port, require_tool, write_suite

pytestmark = pytest.mark.root
APPLETS = ("sh", "cat", "true", "sleep", "echo", "uname", "test", "grep")
SUITE = {"hello": "#!/bin/sh\necho hello from $(uname -m)\n",
         "broken": "#!/bin/sh\necho this one fails\nexit 1\n",
         "nap": "#!/bin/sh\nsleep 1\n"}
TICKS = "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.5; done\necho done >&2\n"
VISIBILITY = "20"  # seconds: a job a killed worker held is delivered again after this; a worker waits half of
# it for a server that restarts (a loaded CI machine needs more than 5 s to start one)


def _wait(what: str, ok: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def _arm64_busybox(directory: Path) -> Path:
    """Debian's arm64 busybox-static, extracted by mmdebstrap (no emulation needed to extract)."""
    out = directory / "busybox-arm64.tar"
    subprocess.run(["mmdebstrap", "--variant=extract", "--architectures=arm64", "--include=busybox-static",
                    "--mode=root", "bookworm", str(out)], check=True, capture_output=True, timeout=600)
    with tarfile.open(out) as tar:
        member = tar.extractfile("./bin/busybox")
        assert member is not None
        path = directory / "busybox-arm64"
        path.write_bytes(member.read())
    return path


@dataclass
class Fleet:
    root: Path
    home: Path  # the server's home: the coordinator runs here
    redis_port: int
    server_port: int
    token: str
    server: subprocess.Popen[bytes] | None = None
    redis: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def broker(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
        return {**base, "IMAGECI_HOME": str(home), "IMAGECI_BROKER_URL": self.broker,
                "IMAGECI_VISIBILITY_TIMEOUT": VISIBILITY, "COLUMNS": "250", **extra}

    def start_redis(self) -> None:
        data = self.root / "redis"
        data.mkdir(exist_ok=True)
        self.redis = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                       "--appendonly", "yes", "--save", "", "--dir", str(data)],
                                      stdout=open(self.root / "redis.log", "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        _wait("redis", lambda: socket.socket().connect_ex(("127.0.0.1", self.redis_port)) == 0)

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.terminate()  # SIGTERM: redis flushes its append-only file and exits
        assert self.redis.wait(timeout=30) == 0

    def start_server(self) -> None:
        self.server = subprocess.Popen([sys.executable, "-m", "imageci.cli", "serve", "--listen",
                                        f"127.0.0.1:{self.server_port}"], env=self.env(self.home),
                                       stdout=subprocess.DEVNULL,
                                       stderr=open(self.root / "server.log", "ab"))  # noqa: SIM115

        def up() -> bool:
            try:
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False
        _wait("the server", up)

    def stop_server(self) -> None:
        assert self.server is not None
        self.server.terminate()
        assert self.server.wait(timeout=30) == 0

    def start_worker(self, name: str, capabilities: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
        home = self.root / name
        log = self.root / f"{name}.log"
        before = log.stat().st_size if log.exists() else 0
        proc = subprocess.Popen([sys.executable, "-m", "imageci.cli", "worker", "--server", self.url,
                                 "--capabilities", capabilities, "-c", str(concurrency), "--loglevel", "INFO"],
                                env=self.env(home, IMAGECI_TOKEN=self.token), stdout=subprocess.DEVNULL,
                                stderr=open(log, "ab"))  # noqa: SIM115
        self.workers[name] = proc
        _wait(f"worker {name}", lambda: " ready: " in log.read_text()[before:] or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        return proc

    def stop_worker(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(sig)
        proc.wait(timeout=60)

    def cli(self, *args: str, home: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageci.cli", *args], env=self.env(home or self.home),
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def coordinate(self, *args: str) -> tuple[subprocess.Popen[str], Path]:
        """`imageci test … --executor celery` in the background; its output file."""
        out = self.root / f"coordinator-{time.monotonic_ns()}.log"
        proc = subprocess.Popen([sys.executable, "-m", "imageci.cli", "test", *args, "--executor", "celery"],
                                env=self.env(self.home), stdout=open(out, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                text=True, cwd=REPO)
        return proc, out

    def attempts(self, ref: str, run: int) -> list[dict[str, object]]:
        res = self.cli("results", ref, "--json")
        assert res.returncode == 0, res.stderr
        return [a for a in json.loads(res.stdout)["attempts"] if a["run"] == run]


def _run_id(output: str) -> int:
    return int(output.split("\nrun ")[1].split(":")[0])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_tool(shutil.which("redis-server") is not None, "redis-server")
    require_tool(Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").is_file(), "qemu-user-static (binfmt for arm64)")
    root = tmp_path_factory.mktemp("fleet")
    home = root / "server"
    fleet = Fleet(root, home, free_port(), free_port(), "")
    settings = Settings.load(home, {})
    settings.ensure()
    suite = write_suite(root / "suite", SUITE)
    slow = write_suite(root / "slow-suite", {"slow": "#!/bin/sh\nsleep 5\necho done\n", "hello": SUITE["hello"]})
    ticks = write_suite(root / "ticks-suite", {"ticks": TICKS})
    arm = busybox_rootfs(root / "arm64.tar", "arm64", APPLETS, busybox=_arm64_busybox(root))
    amd = busybox_rootfs(root / "amd64.tar", "amd64", APPLETS)
    for name, tar, arch, suite_dir in (("bb", amd, "amd64", suite), ("bb-arm", arm, "arm64", suite),
                                       ("bb-slow", amd, "amd64", slow), ("bb-ticks", amd, "amd64", ticks)):
        res = fleet.cli("import", name, str(tar), "--suite", str(suite_dir), "--arch", arch)
        assert res.returncode == 0, res.stdout + res.stderr
    session = Session.open(settings)
    fleet.token = tokens.create(session, "workers", "default", "test", by=LOCAL).secret
    session.close()
    fleet.start_redis()
    fleet.start_server()
    try:
        yield fleet
    finally:
        for name in list(fleet.workers):  # a test that failed half-way: stop its workers, then clean up
            fleet.stop_worker(name)
        for home in root.iterdir():
            if (home / "tmp" / "owners").is_dir() and home != fleet.home:
                fleet.cli("gc", "--force", home=home)
        if fleet.server is not None and fleet.server.poll() is None:
            fleet.stop_server()
        if fleet.redis is not None and fleet.redis.poll() is None:
            fleet.stop_redis()


def test_jobs_go_where_the_capabilities_are_and_verdicts_equal_the_local_executor(fleet: Fleet) -> None:
    fleet.start_worker("amd", "sandbox,arch:amd64")
    fleet.start_worker("arm", "sandbox,arch:arm64")
    try:
        listed = fleet.cli("workers", "--json")
        assert listed.returncode == 0, listed.stderr
        offers = {w["name"]: w for w in json.loads(listed.stdout)}
        assert sorted(tuple(w["capabilities"][:2]) for w in offers.values()) == \
            [("sandbox", "arch:amd64"), ("sandbox", "arch:arm64")]
        amd_name = next(n for n, w in offers.items() if "arch:amd64" in w["capabilities"])
        arm_name = next(n for n, w in offers.items() if "arch:arm64" in w["capabilities"])
        for ref, arch, worker, machine in (("bb:testing", "amd64", amd_name, "x86_64"),
                                           ("bb-arm:testing", "arm64", arm_name, "aarch64")):
            env_suite = fleet.cli("test", ref, "--executor", "celery", "--limit", "memory=512M")
            out = env_suite.stdout
            assert env_suite.returncode == 1, out + env_suite.stderr  # `broken` fails
            mine = fleet.attempts(ref, _run_id(out))
            assert {a["test"] for a in mine} == set(SUITE), out
            assert {a["worker"] for a in mine} == {worker}, (arch, mine)
            verdicts = {a["test"]: a["verdict"] for a in mine}
            assert verdicts == {"hello": "pass", "broken": "fail", "nap": "pass"}, out
            log = fleet.cli("log", ref, "hello")
            assert f"\nhello from {machine}\n" in log.stdout, log.stdout  # it really ran on arm64 (qemu-user)
            assert f"on {worker}" in out
            # the same suite with the local executor: the same verdicts
            local = fleet.cli("test", ref, "--rerun-all", "--executor", "local")
            here = {a["test"]: a["verdict"] for a in fleet.attempts(ref, _run_id(local.stdout))}
            assert local.returncode == 1 and here == verdicts, local.stdout
            assert all(a["worker"] is None for a in fleet.attempts(ref, _run_id(local.stdout)))

        # no arm64 worker: the job waits, shown as such, and runs once one comes
        fleet.stop_worker("arm")
        proc, out_file = fleet.coordinate("bb-arm:testing", "--rerun-all")
        _wait("the waiting line", lambda: "waiting for: arch:arm64" in out_file.read_text(), 30)
        assert proc.poll() is None  # waiting, not failed
        fleet.start_worker("arm", "sandbox,arch:arm64")
        assert proc.wait(timeout=120) == 1, out_file.read_text()
        assert sorted(a["verdict"] for a in fleet.attempts("bb-arm:testing", _run_id(out_file.read_text()))) == \
            ["fail", "pass", "pass"]
    finally:
        for name in ("amd", "arm"):
            if name in fleet.workers:
                fleet.stop_worker(name)


def test_a_worker_killed_mid_test_hands_its_job_to_another_and_one_verdict_is_recorded(fleet: Fleet) -> None:
    procs = {name: fleet.start_worker(name, "sandbox,arch:amd64") for name in ("k1", "k2")}
    try:
        proc, out_file = fleet.coordinate("bb-slow:testing", "--rerun-all")
        _wait("slow to start", lambda: "slow on sandbox: started on" in out_file.read_text(), 60)
        victim_host = out_file.read_text().split("slow on sandbox: started on ")[1].split()[0]
        names = {name: (fleet.root / f"{name}.log").read_text() for name in procs}
        victim = next(n for n, log in names.items() if victim_host in log)
        sandboxes = fleet.root / victim / "tmp" / "sandboxes"
        _wait("the victim's sandbox", lambda: any(sandboxes.glob("sb-*")), 30)
        fleet.stop_worker(victim, signal.SIGKILL)
        assert proc.wait(timeout=120) == 0, out_file.read_text()
        out = out_file.read_text()
        assert "slow on sandbox: started again on" in out, out
        slow = [a for a in fleet.attempts("bb-slow:testing", _run_id(out)) if a["test"] == "slow"]
        assert len(slow) == 1 and slow[0]["verdict"] == "pass" and slow[0]["worker"] != victim_host, slow
        assert any(sandboxes.glob("sb-*"))  # what the killed worker left …
        fleet.start_worker(victim, "sandbox,arch:amd64")  # … its next start removes
        assert not any(sandboxes.glob("sb-*"))
        assert "gc: removed" in (fleet.root / f"{victim}.log").read_text()
    finally:
        for name in ("k1", "k2"):
            if name in fleet.workers:
                fleet.stop_worker(name)


def test_queued_jobs_survive_a_broker_restart_and_results_a_server_restart(fleet: Fleet) -> None:
    proc, out_file = fleet.coordinate("bb:testing", "--rerun-all")
    _wait("jobs queued with no worker", lambda: "waiting for: a live worker" in out_file.read_text(), 30)
    fleet.stop_redis()
    fleet.start_redis()
    fleet.start_worker("late", "sandbox,arch:amd64")
    try:
        assert proc.wait(timeout=120) == 1, out_file.read_text()
        assert len(fleet.attempts("bb:testing", _run_id(out_file.read_text()))) == len(SUITE)
        # the server goes away while a job runs: the worker waits for it, the result lands once
        proc, out_file = fleet.coordinate("bb-slow:testing", "--rerun-all")
        _wait("slow to start", lambda: "slow on sandbox: started on" in out_file.read_text(), 60)
        worker_log = fleet.root / "late.log"
        before = worker_log.stat().st_size
        fleet.stop_server()
        # the test ends while the server is down: its attempt's write fails, and is tried again …
        _wait("the worker to find the server gone", lambda: "trying again" in worker_log.read_text()[before:], 60)
        fleet.start_server()  # … until the server is back (within the worker's patience: half the visibility)
        assert proc.wait(timeout=120) == 0, out_file.read_text()
        slow = [a for a in fleet.attempts("bb-slow:testing", _run_id(out_file.read_text())) if a["test"] == "slow"]
        assert len(slow) == 1 and slow[0]["verdict"] == "pass"
    finally:
        fleet.stop_worker("late")


def test_a_running_job_streams_its_log_and_it_can_be_followed(fleet: Fleet) -> None:
    fleet.start_worker("live", "sandbox,arch:amd64")
    try:
        proc, out_file = fleet.coordinate("bb-ticks:testing", "--rerun-all")
        _wait("ticks to start", lambda: "ticks on sandbox: started on" in out_file.read_text(), 60)
        res = fleet.cli("results", "bb-ticks:testing", "--json")
        [run] = [r["run"] for r in json.loads(res.stdout)["runs"] if r["status"] == "running"]
        follower = subprocess.Popen([sys.executable, "-m", "imageci.cli", "--server", fleet.url, "log",
                                     "bb-ticks:testing", "ticks", "--follow"], stdout=subprocess.PIPE,
                                    env=fleet.env(fleet.root / "reader", IMAGECI_TOKEN=fleet.token))
        assert follower.stdout is not None
        seen = b""
        while b"tick 2\n" not in seen:
            line = follower.stdout.readline()
            assert line, seen  # the follower ended before the test printed its second line
            seen += line
        # the test still runs (it prints for 4 s): what the follower shows came live, not with the attempt
        assert not [a for a in fleet.attempts("bb-ticks:testing", run) if a["test"] == "ticks"]
        # … and the dashboard's run page links the running job to its live log, which shows it
        auth = {"Authorization": f"Bearer {fleet.token}"}
        page = httpx.get(f"{fleet.url}/runs/{run}", headers=auth, timeout=30).text
        link = re.search(rf'href="(/runs/{run}/live/[^"]+)">ticks<', page)
        assert link is not None, page
        assert "tick 2" in httpx.get(fleet.url + link.group(1), headers=auth, timeout=30).text
        rest, _ = follower.communicate(timeout=60)
        assert follower.returncode == 0
        shown = (seen + rest).decode()
        assert shown == "".join(f"tick {i}\n" for i in range(1, 9)) + "done\n", shown
        assert proc.wait(timeout=60) == 0, out_file.read_text()
        recorded = fleet.cli("log", "bb-ticks:testing", "ticks")
        assert "tick 8" in recorded.stdout and "done" in recorded.stdout
        # the run ended (the follower read its end all the same): the live log takes no more
        ended = httpx.post(f"{fleet.url}/api/v1/runs/{run}/live", headers={"Authorization": f"Bearer {fleet.token}"},
                           json={"key": "k" * 16, "test": "t", "testbed": "sandbox", "offset": 0, "data": "x"})
        assert ended.status_code == 200 and ended.json() == {"size": 0, "accepted": False}
        # an append needs a token that may record the run
        anonymous = httpx.post(f"{fleet.url}/api/v1/runs/{run}/live",
                               json={"key": "k" * 16, "test": "t", "testbed": "sandbox", "offset": 0, "data": "x"})
        assert anonymous.status_code == 404  # as for any run it may not see
    finally:
        fleet.stop_worker("live")


def test_a_consumers_suite_runs_on_a_worker_at_the_servers_snapshot(fleet: Fleet) -> None:
    """A consumer registered on the server runs as a job like the version's own tests: the worker fetches its
    snapshot by digest and records the attempt the server's gate reads."""
    project = write_suite(fleet.root / "consumer", {"check.sh": "#!/bin/sh\necho consumed on $(uname -m)\n"})
    added = fleet.cli("consumers", "add", "downstream", "--image", "bb-slow", "--suite", str(project), "--command",
                      "./check.sh", "--gating")
    assert added.returncode == 0, added.stderr
    fleet.start_worker("consumers", "sandbox,arch:amd64")
    try:
        ran = fleet.cli("test", "bb-slow:testing", "--executor", "celery", "--rerun-all")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        mine = fleet.attempts("bb-slow:testing", _run_id(ran.stdout))
        [consumer] = [a for a in mine if a["test"] == "consumer:downstream"]
        assert consumer["verdict"] == "pass" and consumer["worker"], mine
        assert "consumed on x86_64" in fleet.cli("log", "bb-slow:testing", "consumer:downstream").stdout
        gate = fleet.cli("gate", "bb-slow:testing", "--json")
        [section] = [s for s in json.loads(gate.stdout)["sections"] if s["name"] == "consumers"]
        assert section["holds"] and section["summary"] == "1 consumer(s), 1 passed"
    finally:
        fleet.stop_worker("consumers")
        assert fleet.cli("consumers", "remove", "downstream").returncode == 0


def test_a_bisection_runs_its_steps_on_workers_that_make_each_intermediate_image(fleet: Fleet) -> None:
    """`imageci bisect --executor celery` on the server's home: the ends and every intermediate image run as
    jobs; the worker makes each intermediate itself from the two versions it fetched (its recipe's digest
    checked) and records the attempt through the server; the culprit is the local executor's."""
    import sqlite3

    from bisectkit import WORKS, image, many, upgraded

    suite = write_suite(fleet.root / "bisect-suite", {"works": WORKS})
    base = many(6)
    refs = []
    for i, packages in enumerate((base, upgraded(base, breaks="pkg004"))):
        done = fleet.cli("import", "bis", str(image(fleet.root / f"bis-{i}.tar", packages)), "--suite", str(suite))
        assert done.returncode == 0, done.stderr
        refs.append(re.search(r"imported (bis@\S+)", done.stdout).group(1))  # type: ignore[union-attr]
    good, bad = refs
    fleet.start_worker("bisector", "sandbox,arch:amd64", concurrency=2)
    try:
        done = fleet.cli("bisect", bad, "works", "--good", good, "--repeat", "1", "-j", "2", "--executor", "celery",
                         "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["finding"] == "culprit" and [c["package"] for c in result["culprits"]] == ["pkg004"]
        runs = [r for s in result["steps"] for r in s["runs"]]
        with sqlite3.connect(fleet.home / "catalog.db") as db:
            workers = {w for (w,) in db.execute(f"SELECT worker FROM attempts WHERE run_id IN "
                                                f"({','.join(map(str, runs))})")}
        assert len(runs) == result["test_runs"] and workers and None not in workers, workers
    finally:
        fleet.stop_worker("bisector")
