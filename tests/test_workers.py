"""Celery workers against the real things: Debian's redis-server on 127.0.0.1
(broker and result backend, appendonly), `imageci serve`, and `imageci worker`
processes with their own homes and different capability sets — routing by
architecture (an arm64 image runs on the worker that offers arch:arm64, through
qemu-user), a job no live worker can take shown as waiting, kill -9 of a worker
mid-test, a broker restart and a server restart mid-run, and the same verdicts
as the local executor; a failing test's testbed held on a worker and entered through the server. The fleet:
tests/fleetkit.py."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imageci.app import tokens
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.config import Settings

from conftest import REPO, busybox_rootfs, free_port, require_tool, write_suite
from fleetkit import Fleet, arm64_busybox, run_id, wait_for

pytestmark = pytest.mark.root
APPLETS = ("sh", "cat", "true", "sleep", "echo", "uname", "test", "grep")
SUITE = {"hello": "#!/bin/sh\necho hello from $(uname -m)\n",
         "broken": "#!/bin/sh\necho this one fails\nexit 1\n",
         "nap": "#!/bin/sh\nsleep 1\n"}
TICKS = "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.5; done\necho done >&2\n"


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
    arm = busybox_rootfs(root / "arm64.tar", "arm64", APPLETS, busybox=arm64_busybox(root))
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
            mine = fleet.attempts(ref, run_id(out))
            assert {a["test"] for a in mine} == set(SUITE), out
            assert {a["worker"] for a in mine} == {worker}, (arch, mine)
            verdicts = {a["test"]: a["verdict"] for a in mine}
            assert verdicts == {"hello": "pass", "broken": "fail", "nap": "pass"}, out
            log = fleet.cli("log", ref, "hello")
            assert f"\nhello from {machine}\n" in log.stdout, log.stdout  # it really ran on arm64 (qemu-user)
            assert f"on {worker}" in out
            # the same suite with the local executor: the same verdicts
            local = fleet.cli("test", ref, "--rerun-all", "--executor", "local")
            here = {a["test"]: a["verdict"] for a in fleet.attempts(ref, run_id(local.stdout))}
            assert local.returncode == 1 and here == verdicts, local.stdout
            assert all(a["worker"] is None for a in fleet.attempts(ref, run_id(local.stdout)))

        # no arm64 worker: the job waits, shown as such, and runs once one comes
        fleet.stop_worker("arm")
        proc, out_file = fleet.coordinate("bb-arm:testing", "--rerun-all")
        wait_for("the waiting line", lambda: "waiting for: arch:arm64" in out_file.read_text(), 30)
        assert proc.poll() is None  # waiting, not failed
        fleet.start_worker("arm", "sandbox,arch:arm64")
        assert proc.wait(timeout=120) == 1, out_file.read_text()
        assert sorted(a["verdict"] for a in fleet.attempts("bb-arm:testing", run_id(out_file.read_text()))) == \
            ["fail", "pass", "pass"]
    finally:
        for name in ("amd", "arm"):
            if name in fleet.workers:
                fleet.stop_worker(name)


def test_a_worker_killed_mid_test_hands_its_job_to_another_and_one_verdict_is_recorded(fleet: Fleet) -> None:
    procs = {name: fleet.start_worker(name, "sandbox,arch:amd64") for name in ("k1", "k2")}
    try:
        proc, out_file = fleet.coordinate("bb-slow:testing", "--rerun-all")
        wait_for("slow to start", lambda: "slow on sandbox: started on" in out_file.read_text(), 60)
        victim_host = out_file.read_text().split("slow on sandbox: started on ")[1].split()[0]
        names = {name: (fleet.root / f"{name}.log").read_text() for name in procs}
        victim = next(n for n, log in names.items() if victim_host in log)
        sandboxes = fleet.root / victim / "tmp" / "sandboxes"
        wait_for("the victim's sandbox", lambda: any(sandboxes.glob("sb-*")), 30)
        fleet.stop_worker(victim, signal.SIGKILL)
        assert proc.wait(timeout=120) == 0, out_file.read_text()
        out = out_file.read_text()
        assert "slow on sandbox: started again on" in out, out
        slow = [a for a in fleet.attempts("bb-slow:testing", run_id(out)) if a["test"] == "slow"]
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
    wait_for("jobs queued with no worker", lambda: "waiting for: a live worker" in out_file.read_text(), 30)
    fleet.stop_redis()
    fleet.start_redis()
    fleet.start_worker("late", "sandbox,arch:amd64")
    try:
        assert proc.wait(timeout=120) == 1, out_file.read_text()
        assert len(fleet.attempts("bb:testing", run_id(out_file.read_text()))) == len(SUITE)
        # the server goes away while a job runs: the worker waits for it, the result lands once
        proc, out_file = fleet.coordinate("bb-slow:testing", "--rerun-all")
        wait_for("slow to start", lambda: "slow on sandbox: started on" in out_file.read_text(), 60)
        worker_log = fleet.root / "late.log"
        before = worker_log.stat().st_size
        fleet.stop_server()
        # the test ends while the server is down: its attempt's write fails, and is tried again …
        wait_for("the worker to find the server gone", lambda: "trying again" in worker_log.read_text()[before:], 60)
        fleet.start_server()  # … until the server is back (within the worker's patience: half the visibility)
        assert proc.wait(timeout=120) == 0, out_file.read_text()
        slow = [a for a in fleet.attempts("bb-slow:testing", run_id(out_file.read_text())) if a["test"] == "slow"]
        assert len(slow) == 1 and slow[0]["verdict"] == "pass"
    finally:
        fleet.stop_worker("late")


def test_a_running_job_streams_its_log_and_it_can_be_followed(fleet: Fleet) -> None:
    fleet.start_worker("live", "sandbox,arch:amd64")
    try:
        proc, out_file = fleet.coordinate("bb-ticks:testing", "--rerun-all")
        wait_for("ticks to start", lambda: "ticks on sandbox: started on" in out_file.read_text(), 60)
        res = fleet.cli("results", "bb-ticks:testing", "--json")
        [run] = [r["run"] for r in json.loads(res.stdout)["runs"] if r["status"] == "running"]
        follower = subprocess.Popen([sys.executable, "-m", "imageci.cli", "--server", fleet.url, "log",
                                     "bb-ticks:testing", "ticks", "--follow"], stdout=subprocess.PIPE,
                                    env=fleet.env(fleet.root / "reader", IMAGECI_TOKEN=fleet.token),
                                    bufsize=0)  # unbuffered: communicate(timeout=…) reads the pipe itself and
        # would miss what a buffered readline() had read past its line (a CI run lost "tick 3" so)
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
        mine = fleet.attempts("bb-slow:testing", run_id(ran.stdout))
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


def _person(fleet: Fleet, token: str, *args: str, typed: str | None = None) -> subprocess.CompletedProcess[str]:
    """`imageci --server URL ARGS` as a person with ``token``, from a home of their own."""
    return subprocess.run([sys.executable, "-m", "imageci.cli", "--server", fleet.url, *args], input=typed,
                          env=fleet.env(fleet.root / "person", IMAGECI_TOKEN=token), capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def _hold_on_worker(fleet: Fleet, duration: str) -> int:
    """`imageci run bb:testing broken --executor celery --hold-on-failure=DURATION` for alice; the hold's id."""
    done = subprocess.run([sys.executable, "-m", "imageci.cli", "run", "bb:testing", "broken", "--rerun-all",
                           "--executor", "celery", f"--hold-on-failure={duration}"], capture_output=True, text=True,
                          env=fleet.env(fleet.home, IMAGECI_ACTOR="alice"), timeout=300, cwd=REPO)
    printed = re.search(r"held broken \[sandbox\] until \S+: enter it with imageci attach (\d+) ", done.stdout)
    assert done.returncode == 1 and printed, done.stdout + done.stderr
    return int(printed.group(1))


def test_a_failing_test_held_on_a_worker_is_entered_through_the_server_by_its_owner_only(fleet: Fleet) -> None:
    """The worker keeps the failing test's sandbox and only ever connects out: alice (the run's actor) enters it
    through the server with and without a terminal and releases it; an admin of the namespace may enter it; a
    colleague's token and another namespace's admin are told nothing is held; its time ends another; a worker
    killed while holding leaves its sandbox to its next start's gc and its hold to the server's staleness."""
    from test_holds import on_a_terminal

    session = Session.open(Settings.load(fleet.home, {}))
    alice, boss, bob, mallory = (tokens.create(session, name, ns, scopes, by=LOCAL).secret for name, ns, scopes in
                                 (("alice", "default", "test"), ("boss", "default", "admin"),
                                  ("bob", "default", "test"), ("mallory", "elsewhere", "admin")))
    session.close()
    sandboxes = fleet.root / "keeper" / "tmp" / "sandboxes"
    fleet.start_worker("keeper", "sandbox,arch:amd64")
    try:
        hold = _hold_on_worker(fleet, "10m")
        assert len(list(sandboxes.glob("sb-*"))) == 1  # the failing test's, as it left it
        [row] = json.loads(_person(fleet, alice, "held", "--json").stdout)
        assert (row["id"], row["test"], row["by"]) == (hold, "broken", "alice")
        assert row["command"] == f"imageci attach {hold}"
        assert row["worker"].startswith("imageci-") and fleet.url.split("//")[1] not in row["command"]
        inside = _person(fleet, alice, "attach", str(hold), "--", "sh", "-c", "cat; uname -m; exit 3",
                         typed="typed\n")
        assert (inside.returncode, inside.stdout) == (3, "typed\nx86_64\n"), inside
        person = type("Person", (), {"env": lambda _self: fleet.env(fleet.root / "person", IMAGECI_TOKEN=alice,
                                                                   IMAGECI_SERVER=fleet.url)})()
        code, shown = on_a_terminal(person, "attach", str(hold), typed=b"test -t 0 && echo tty-$((6*7)); exit 4\n")
        assert code == 4 and b"tty-42" in shown, shown
        assert _person(fleet, boss, "attach", str(hold), "--", "echo", "admin").stdout == "admin\n"
        here = fleet.cli("attach", str(hold), "--", "echo", "operator")  # the server's own machine, its home
        assert (here.returncode, here.stdout) == (0, "operator\n"), here
        for token in (bob, mallory):  # the same answer as for no hold at all
            refused = _person(fleet, token, "attach", str(hold), "--", "echo", "no")
            assert refused.returncode == 2 and f"nothing is held as {hold}" in refused.stderr, refused
            assert json.loads(_person(fleet, token, "held", "--json").stdout) == []
            api = httpx.post(f"{fleet.url}/api/v1/holds/{hold}/pipes", headers={"Authorization": f"Bearer {token}"})
            assert api.status_code == 404 and str(hold) in api.json()["error"], api.text
        worker_side = httpx.get(f"{fleet.url}/api/v1/holds/{hold}/pending",
                                headers={"Authorization": f"Bearer {alice}"})
        assert worker_side.status_code == 404  # only the worker's token serves the hold
        released = _person(fleet, alice, "release", str(hold))
        assert released.returncode == 0 and "its testbed is removed" in released.stdout, released
        assert not list(sandboxes.glob("sb-*")) and _person(fleet, alice, "attach", str(hold)).returncode == 2

        _hold_on_worker(fleet, "2s")  # its time ends it
        wait_for("the hold's time", lambda: json.loads(_person(fleet, alice, "held", "--json").stdout) == [], 30)
        wait_for("the sandbox to go", lambda: not list(sandboxes.glob("sb-*")), 10)

        _killed_while_holding(fleet, alice, sandboxes)
    finally:
        if "keeper" in fleet.workers:
            fleet.stop_worker("keeper")


def _killed_while_holding(fleet: Fleet, alice: str, sandboxes: Path) -> None:
    """A worker killed while it holds a testbed: its next start's gc removes the sandbox, and the server ends the
    hold once the worker has not asked for longer than it waits."""
    import sqlite3

    hold = _hold_on_worker(fleet, "10m")
    fleet.stop_worker("keeper", signal.SIGKILL)
    assert len(list(sandboxes.glob("sb-*"))) == 1
    fleet.start_worker("keeper", "sandbox,arch:amd64")
    assert not list(sandboxes.glob("sb-*"))
    with sqlite3.connect(fleet.home / "catalog.db") as db:
        db.execute("UPDATE holds SET seen_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (hold,))
    assert json.loads(_person(fleet, alice, "held", "--json").stdout) == []
    assert "its worker was gone" in _person(fleet, alice, "attach", str(hold)).stderr
