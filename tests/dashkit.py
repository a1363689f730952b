"""A dashboard for tests: `imageci serve` over a catalog seeded by real sandbox runs (``make_site``),
shared by the HTTP tests and the browser tests (``conftest.site``, one per test process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from clikit import run_cli

from imageci.app import tokens
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.config import Settings
from imageci.store.catalog import Catalog
from imageci.store.models import Attempt
from imageci.store.states import utcnow

from conftest import REPO, busybox_rootfs, free_port, write_suite

APPLETS = ("sh", "cat", "true", "sleep", "grep", "echo", "printf", "seq", "test", "[")


SHOTS = Path(os.environ.get("IMAGECI_SCREENSHOTS", REPO / "out" / "dashboard-screenshots"))


CHECK_FAILS = "expected the good marker, found a bad one"


@dataclass
class Site:
    url: str
    home: Path
    settings: Settings
    alpha: list[str]  # alpha@SERIAL, oldest first (namespace team-a)
    beta: str  # beta@SERIAL (namespace team-b, private)
    gamma: str  # gamma@SERIAL (namespace team-b, public)
    token_a: str  # read + promote in team-a
    suite: Path

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "IMAGECI_HOME": str(self.home)}
        env.pop("IMAGECI_DB_URL", None)
        return run_cli(args, env, timeout=timeout)

    def get(self, path: str, token: str | None = None, **kw: object) -> httpx.Response:
        headers = {"Accept": "text/html", **({"Authorization": f"Bearer {token}"} if token else {})}
        return httpx.get(self.url + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def _serve(home: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "IMAGECI_HOME": str(home)}
    env.pop("IMAGECI_DB_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "imageci.cli", *args, "--listen", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=open(home / f"{args[0]}.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/", timeout=2).status_code in (200, 401):
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (home / f"{args[0]}.log").read_text()
        assert time.monotonic() < deadline, "the server did not answer within 60 s"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def make_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """alpha (team-a) v1 passes everything, v2 fails `check`; beta (team-b, private); gamma (team-b, public).
    Every result comes from a real sandbox run."""
    base = tmp_path_factory.mktemp("dash")
    home = base / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    settings.ensure()
    suite = write_suite(base / "suite", {
        "check.sh": f"#!/bin/sh\ngrep -q good /etc/imageci-marker || {{ echo '{CHECK_FAILS}' >&2; exit 1; }}\n",
        "colours.sh": "#!/bin/sh\nprintf '\\033[1;31mred and bold\\033[0m plain \\033[32mgreen\\033[0m\\n'\n",
        "<script>.sh": "#!/bin/sh\necho '<b>not bold</b><script>window.pwned=1</script>'\n",
        "big.sh": "#!/bin/sh\nseq 1 60000\necho END-OF-BIG-LOG\n",
        "marker.sh": "#!/bin/sh\ncat /etc/imageci-marker\n",  # a log of each version's own
    })
    site = Site("", home, settings, [], "", "", "", suite)
    for name, marker in (("alpha", "good-1"), ("alpha", "bad-2"), ("beta", "good-b"), ("gamma", "good-g")):
        tar = busybox_rootfs(base / f"{name}-{marker}.tar", marker, APPLETS)
        done = site.cli("import", name, str(tar), "--suite", str(suite))  # its gate: every test on the sandbox
        assert done.returncode == 0, done.stdout + done.stderr
        serial = Catalog.open(settings.db_url)
        ref = f"{name}@{serial.versions(name)[-1].serial}"
        serial.close()
        done = site.cli("test", ref, "--testbed", "sandbox")
        assert done.returncode in (0, 1), done.stdout + done.stderr
        if name == "alpha":
            site.alpha.append(ref)
        else:
            setattr(site, name, ref)
    cat = Catalog.open(settings.db_url)  # a transient failure, as a worker records one: failed, then passed
    v = cat.resolve(site.alpha[1])
    run = cat.start_run(v.digest, v.id, {"tests": ["flappy"], "testbeds": ["sandbox"], "retries": 1})
    for n, verdict in enumerate(("fail", "pass"), 1):
        now = utcnow()
        cat.record_attempt(Attempt(run_id=run, image_digest=v.digest, test_id="flappy", test_digest="x",
                                   testbed="sandbox", attempt=n, started_at=now, ended_at=now,
                                   exit_code=0 if verdict == "pass" else 1, verdict=verdict, reason=""))
    cat.finish_run(run, 0)
    cat.close()
    for name, namespace, public in (("alpha", "team-a", False), ("beta", "team-b", False), ("gamma", "team-b", True)):
        args = ["product", name, "--namespace", namespace, "--public" if public else "--private"]
        assert site.cli(*args).returncode == 0
    s = Session.open(settings)
    site.token_a = tokens.create(s, "alice", "team-a", "read,promote", by=LOCAL).secret
    s.close()
    proc, site.url = _serve(home, "serve")
    try:
        yield site
    finally:
        _stop(proc)
