"""The fleet the worker tests share (tests/test_workers.py): Debian's redis-server on 127.0.0.1, `imageci serve`
on the server's home, `imageci worker` processes with homes of their own, and the commands run against them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from conftest import REPO

VISIBILITY = "20"  # seconds: a job a killed worker held is delivered again after this; a worker waits half of
# it for a server that restarts (a loaded CI machine needs more than 5 s to start one)


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def arm64_busybox(directory: Path) -> Path:
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
        wait_for("redis", lambda: socket.socket().connect_ex(("127.0.0.1", self.redis_port)) == 0)

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
        wait_for("the server", up)

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
        wait_for(f"worker {name}", lambda: " ready: " in log.read_text()[before:] or proc.poll() is not None)
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


def run_id(output: str) -> int:
    return int(output.split("\nrun ")[1].split(":")[0])

