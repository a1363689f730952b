"""Benchmark: the same 200-test sandbox suite run by the local executor and by
Celery with 2 local workers (Redis on 127.0.0.1 as broker and result backend,
`imageci serve` taking the workers' attempts).

The image is a static-busybox rootfs imported with a suite of N trivial
scripts, so what is measured is imageci's cost per test, not the tests'. Both
sides run the same number of tests at once (local: ``-j 2``; Celery: two
workers with ``-c 1``), each through the CLI with ``--rerun-all``, after one
warm-up run (the workers fetch the version once). The per-job overhead the
broker adds is (celery wall − local wall) × 2 slots / N.

Target (issue 12): ≤ 20 ms per job on loopback.
Last line: `celery fan-out: N tests, local -j2 A s (a/s), 2 workers B s (b/s): broker overhead C ms per job`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from common import sized  # noqa: E402

from imageci.app import tokens  # noqa: E402
from imageci.app.access import LOCAL  # noqa: E402
from imageci.app.session import Session  # noqa: E402
from imageci.config import Settings  # noqa: E402

from conftest import busybox_rootfs, write_suite  # noqa: E402

CLI = [sys.executable, "-m", "imageci.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(what: str, ok: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not come up within {timeout} s")
        time.sleep(0.1)


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    res = subprocess.run(argv, env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return took


def _start_server_and_workers(root: Path, env: dict[str, str], api_port: int, token: str,
                              procs: list[subprocess.Popen[bytes]]) -> None:
    """`imageci serve` on ``api_port`` and two workers of one slot each (their homes under ``root``)."""
    procs.append(subprocess.Popen([*CLI, "serve", "--listen", f"127.0.0.1:{api_port}"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{api_port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False
    wait("imageci serve", up)
    for n in range(2):
        log = root / f"worker{n}.log"
        procs.append(subprocess.Popen([*CLI, "worker", "--server", url, "--capabilities", "sandbox", "-c", "1"],
                                      env={**env, "IMAGECI_HOME": str(root / f"worker{n}"), "IMAGECI_TOKEN": token},
                                      stdout=subprocess.DEVNULL, stderr=log.open("wb")))
        wait(f"worker {n}", lambda log=log: " ready: " in log.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=sized(200, 4))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="imageci-bench-celery-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        home = root / "server"
        base = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
        redis_port, api_port = free_port(), free_port()
        broker = f"redis://127.0.0.1:{redis_port}/0"
        env = {**base, "IMAGECI_HOME": str(home), "IMAGECI_BROKER_URL": broker}
        suite = write_suite(root / "suite", {f"t{i:03d}": "#!/bin/sh\ntrue\n" for i in range(args.tests)})
        tar = busybox_rootfs(root / "bb.tar", "bench", ("sh", "true"))
        subprocess.run([*CLI, "import", "bench", str(tar), "--suite", str(suite)], env=env, check=True,
                       capture_output=True)
        settings = Settings.load(home, {})
        session = Session.open(settings)
        token = tokens.create(session, "bench-workers", "default", "test", by=LOCAL).secret
        session.close()
        (root / "redis").mkdir()
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                       "--appendonly", "yes", "--save", "", "--dir", str(root / "redis")],
                                      stdout=subprocess.DEVNULL))
        wait("redis", lambda: socket.socket().connect_ex(("127.0.0.1", redis_port)) == 0)
        _start_server_and_workers(root, env, api_port, token, procs)
        test = [*CLI, "test", "bench:testing", "--rerun-all"]
        timed([*test, "--executor", "celery"], env)  # warm-up: the workers fetch the version
        timed([*test, "--executor", "local", "-j", "2"], env)
        local = timed([*test, "--executor", "local", "-j", "2"], env)
        celery = timed([*test, "--executor", "celery"], env)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("KEEP"):
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(root)
    n = args.tests
    overhead = (celery - local) * 2 / n * 1000
    print(f"local executor, -j 2: {local:.2f} s for {n} tests ({n / local:.1f} tests/s)")
    print(f"celery, 2 workers × 1: {celery:.2f} s for {n} tests ({n / celery:.1f} tests/s)")
    print(f"celery fan-out: {n} tests, local -j2 {local:.2f} s ({n / local:.1f}/s), 2 workers {celery:.2f} s "
          f"({n / celery:.1f}/s): broker overhead {overhead:.1f} ms per job")


if __name__ == "__main__":
    main()
