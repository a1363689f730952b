"""`imageci serve`: the HTTP API on a real Uvicorn on 127.0.0.1, over the same
application layer as the CLI; tokens, scopes, namespaces and channel followers."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from sqlalchemy import text as sqltext

from imageci.app import queries, tokens
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.config import Settings
from imageci.store import database
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import Attempt, State
from imageci.store.states import utcnow

from conftest import REPO, free_port
from test_diskimport import corrupt

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


def start_server(home: Path, db_url: str | None = None, *args: str, **extra_env: str) -> Iterator[Server]:
    """`imageci serve` on a free 127.0.0.1 port over ``home`` (seeded), stopped with SIGTERM."""
    settings = Settings(home=home, db_url=db_url or f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    settings.ensure()
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from start_server(tmp_path_factory.mktemp("server") / "home", IMAGECI_MAX_UPLOAD="1M")


def _token(server: Server, name: str, namespace: str, scopes: str, **kw: object) -> str:
    s = Session.open(server.settings)
    try:
        return tokens.create(s, name, namespace, scopes, by=LOCAL, **kw).secret  # type: ignore[arg-type]
    finally:
        s.close()


def test_health_readiness_openapi_and_request_ids(server: Server) -> None:
    assert server.get("/healthz").json()["status"] == "ok"
    ready = server.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    spec = server.get("/openapi.json").json()
    assert {f"{API}/images", f"{API}/images/{{ref}}/results", f"{API}/tokens"} <= set(spec["paths"])
    r = httpx.get(server.url + "/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert len(server.get("/healthz").headers["x-request-id"]) == 16
    log = (server.home / "server.log").read_text()
    assert '"request_id": "abc-123"' in log and '"path": "/healthz"' in log and '"status": 200' in log


def test_the_api_answers_what_the_application_layer_answers(server: Server) -> None:
    admin = _token(server, "infra-admin", "infra", "admin")
    got = server.get(f"{API}/images/public-base/results", admin).json()
    s = Session.open(server.settings)
    try:
        assert got == queries.results(s, "public-base").model_dump(mode="json")
        assert server.get(f"{API}/images", admin).json() == [
            r.model_dump(mode="json") for r in queries.images(s) if r.namespace == "infra"]
    finally:
        s.close()


VISIBLE = {  # token kind → the products it sees in /images
    "anonymous": {"public-base"},
    "infra-read": {"infra-base", "public-base"},
    "apps-read": {"team-app", "public-base"},
    "apps-test": {"team-app", "public-base"},
    "infra-follower": {"infra-base"},  # stable channel only: one infra-base version (public-base has none)
}


def test_namespaces_scopes_and_channels_decide_what_a_token_sees(server: Server) -> None:
    secrets = {"anonymous": None,
               "infra-read": _token(server, "m-infra-read", "infra", "read"),
               "apps-read": _token(server, "m-apps-read", "apps", "read"),
               "apps-test": _token(server, "m-apps-test", "apps", "test"),
               "infra-follower": _token(server, "m-infra-follower", "infra", "read", channel="stable")}
    refs = {"infra-base": "infra-base:testing", "team-app": "team-app", "public-base": "public-base"}
    for kind, secret in secrets.items():
        rows = server.get(f"{API}/images", secret).json()
        assert {r["name"] for r in rows} == VISIBLE[kind], kind
        for product, ref in refs.items():
            res = server.get(f"{API}/images/{ref}/results", secret)
            if product in VISIBLE[kind] and not (kind == "infra-follower" and ref.endswith(":testing")):
                assert res.status_code == 200, (kind, ref, res.text)
            else:  # not visible answers exactly like absent: no name, no hint
                assert res.status_code == 404, (kind, ref, res.text)
                assert res.json()["error"] == f"unknown image reference {ref!r}"
        flaky = server.get(f"{API}/flaky", secret).json()
        assert {r["image"].split("@")[0] for r in flaky} == VISIBLE[kind], kind
    follower = server.get(f"{API}/images", secrets["infra-follower"]).json()
    assert [(r["name"], r["state"]) for r in follower if r["name"] == "infra-base"] == [("infra-base", "stable")]
    # a follower's bare NAME means its channel
    assert server.get(f"{API}/images/infra-base/events", secrets["infra-follower"]).status_code == 200
    digest = server.get(f"{API}/images", secrets["infra-read"]).json()[0]["digest"]
    assert server.get(f"{API}/images/{digest}/results", secrets["apps-read"]).status_code == 404


def test_expired_revoked_unknown_and_malformed_credentials_are_refused(server: Server) -> None:
    short = _token(server, "short-lived", "infra", "read", expires=__import__("datetime").timedelta(seconds=1))
    assert server.get(f"{API}/whoami", short).json()["name"] == "short-lived"
    time.sleep(1.5)
    r = server.get(f"{API}/images", short)
    assert r.status_code == 401 and "expired" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    doomed = _token(server, "doomed", "apps", "read")
    assert server.get(f"{API}/images", doomed).status_code == 200
    assert subprocess.run([sys.executable, "-m", "imageci.cli", "token", "revoke", "doomed"], capture_output=True,
                          env={**os.environ, "IMAGECI_HOME": str(server.home)}).returncode == 0
    r = server.get(f"{API}/images", doomed)
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert server.get(f"{API}/images", "ici_" + "x" * 43).json()["error"] == "unknown token"
    assert server.get(f"{API}/images", "hunter2").status_code == 401
    r = httpx.get(server.url + f"{API}/images", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert r.status_code == 401 and "not an imageci token" in r.json()["error"]  # Basic: the password is
    r = httpx.get(server.url + f"{API}/images", headers={"Authorization": "Digest Zm9vOmJhcg=="})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]


def test_bad_requests_get_a_4xx_with_a_message(server: Server) -> None:
    admin = _token(server, "bad-admin", "infra", "admin")
    r = server.get(f"{API}/images/Not A Ref/results", admin)
    assert r.status_code == 400 and "bad image reference" in r.json()["error"]
    r = server.get(f"{API}/flaky", admin, params={"since": "soon"})
    assert r.status_code == 400 and r.json()["error"]
    r = server.get(f"{API}/images/infra-base/results", admin, params={"test": "ghost"})
    assert r.status_code == 400 and "no results for ghost" in r.json()["error"]


def test_tokens_over_the_api_need_an_admin_of_that_namespace(server: Server) -> None:
    admin = _token(server, "api-admin", "apps", "admin")
    reader = _token(server, "api-reader", "apps", "read")
    body = {"name": "ci-bot", "namespace": "apps", "scopes": "publish,test"}
    assert httpx.post(server.url + f"{API}/tokens", json=body, headers={"Authorization": f"Bearer {reader}"}
                      ).status_code == 403
    made = httpx.post(server.url + f"{API}/tokens", json=body, headers={"Authorization": f"Bearer {admin}"})
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    assert secret.startswith("ici_") and len(secret) == 47  # 256 random bits
    who = server.get(f"{API}/whoami", secret)
    assert who.json()["scopes"] == ["publish", "test"], who.text
    other = {"name": "sneaky", "namespace": "infra", "scopes": "admin"}
    r = httpx.post(server.url + f"{API}/tokens", json=other, headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 403 and "namespace 'infra'" in r.json()["error"]
    listed = {t["name"] for t in server.get(f"{API}/tokens", admin).json()}
    assert "ci-bot" in listed and "infra-admin" not in listed  # only its own namespace's tokens
    with Catalog.open(server.settings.db_url).engine.connect() as conn:  # only hashes are kept
        from sqlalchemy import text

        kept = [r[0] for r in conn.execute(text("SELECT secret_sha256 FROM tokens"))]
    assert secret not in kept and tokens.digest(secret) in kept
    assert httpx.delete(server.url + f"{API}/tokens/ci-bot", headers={"Authorization": f"Bearer {admin}"}
                        ).json()["revoked"] is not None
    assert server.get(f"{API}/whoami", secret).status_code == 401


def test_token_and_product_commands(tmp_path: Path) -> None:
    """The CLI's `token` and `product` commands: parse, call the layer, print (a secret only once)."""
    home = tmp_path / "home"
    env = {**os.environ, "IMAGECI_HOME": str(home)}
    env.pop("IMAGECI_DB_URL", None)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageci.cli", *argv], capture_output=True, text=True, env=env)

    made = cli("token", "create", "--name", "ci-bot", "--namespace", "apps", "--scope", "publish,test",
               "--expires", "90d")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("ici_") and made.stdout.count("\n") == 1 and "not kept" in made.stderr
    listed = cli("token", "list", "--json")
    assert secret not in listed.stdout and '"ci-bot"' in listed.stdout and '"expires": "' in listed.stdout
    assert cli("token", "create", "--name", "ci-bot", "--namespace", "apps").returncode == 2  # name taken
    assert cli("token", "create", "--name", "x", "--namespace", "Apps!").returncode == 2
    bad = cli("token", "create", "--name", "y", "--namespace", "apps", "--scope", "read,root")
    assert bad.returncode == 2 and "unknown scope(s) root" in bad.stderr
    assert cli("token", "create", "--name", "z", "--namespace", "apps", "--scope", "test",
               "--channel", "stable").returncode == 2  # a follower only reads
    assert cli("token", "revoke", "ci-bot").returncode == 0
    assert "revoked" in cli("token", "list").stdout.splitlines()[0].lower()
    assert cli("token", "revoke", "nobody").returncode == 2
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    cat = Catalog.open(settings.db_url)
    cat.register_version("team-app", "e" * 64, [], input_hash=None, definition="name: team-app", build_info={})
    cat.close()
    moved = cli("product", "team-app", "--namespace", "apps", "--public")
    assert moved.returncode == 0 and "namespace 'apps', public, 1 version(s)" in moved.stdout
    s = Session.open(settings)
    try:
        assert [(r.namespace, r.public) for r in queries.images(s, "team-app")] == [("apps", True)]
        from imageci.app import products

        assert products.configure(s, "team-app", public=False).public is False
        assert cli("product", "ghost", "--public").returncode == 2
        assert cli("serve", "--listen", "nowhere").returncode == 2
    finally:
        s.close()


def test_tokens_products_and_runs_from_a_remote_cli(server: Server, tmp_path: Path) -> None:
    admin = _token(server, "apps-admin", "apps", "admin")
    reader = _token(server, "apps-reader-2", "apps", "read")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    env |= {"IMAGECI_HOME": str(tmp_path / "laptop"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "IMAGECI_SERVER": server.url}

    def cli(token: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        extra = {"IMAGECI_TOKEN": token} if token else {}
        return subprocess.run([sys.executable, "-m", "imageci.cli", *args], capture_output=True, text=True,
                              env={**env, **extra})

    made = cli(admin, "token", "create", "--name", "apps-ci", "--namespace", "apps", "--scope", "publish,test")
    assert made.returncode == 0 and made.stdout.strip().startswith("ici_"), made.stderr
    assert httpx.get(f"{server.url}{API}/whoami",
                     headers={"Authorization": f"Bearer {made.stdout.strip()}"}).json()["name"] == "apps-ci"
    assert cli(admin, "token", "create", "--name", "x-infra", "--namespace", "infra").returncode == 9
    assert cli(reader, "token", "create", "--name", "x-apps", "--namespace", "apps").returncode == 9
    listed = json.loads(cli(admin, "token", "list", "--json").stdout)
    assert "apps-ci" in {t["name"] for t in listed} and {t["namespace"] for t in listed} == {"apps"}
    assert cli(admin, "token", "revoke", "apps-ci").returncode == 0
    assert httpx.get(f"{server.url}{API}/whoami",
                     headers={"Authorization": f"Bearer {made.stdout.strip()}"}).status_code == 401
    mine = json.loads(cli(reader, "products", "--json").stdout)
    assert {"team-app", "public-base"} <= {p["name"] for p in mine} and "infra-base" not in {p["name"] for p in mine}
    anonymous = json.loads(cli(None, "products", "--json").stdout)
    assert {p["name"] for p in anonymous} <= {p["name"] for p in mine} and all(p["public"] for p in anonymous)
    shown = cli(reader, "product", "team-app")
    assert shown.returncode == 0 and "namespace 'apps', private" in shown.stdout
    assert cli(reader, "product", "team-app", "--public").returncode == 9  # read may not change it
    hidden = cli(admin, "product", "infra-base", "--public")
    assert hidden.returncode == 2 and "unknown image 'infra-base'" in hidden.stderr  # another namespace's
    made_public = cli(admin, "product", "team-app", "--public")
    assert made_public.returncode == 0 and "public" in made_public.stdout
    assert cli(admin, "product", "team-app", "--private").returncode == 0
    run = server.get(f"{API}/images/team-app:testing/results", reader).json()["runs"][0]["run"]
    one = server.get(f"{API}/runs/{run}", reader).json()
    assert [r["run"] for r in one["runs"]] == [run] and all(a["run"] == run for a in one["attempts"])
    assert server.get(f"{API}/runs/{run}", _token(server, "infra-reader-3", "infra", "read")).status_code == 404


def test_the_remote_cli_prints_and_exits_as_the_local_one(server: Server, tmp_path: Path) -> None:
    reader = _token(server, "cli-reader", "infra", "read")
    promoter = _token(server, "cli-promoter", "infra", "promote")
    local_env = {**os.environ, "IMAGECI_HOME": str(server.home)}
    local_env.pop("IMAGECI_DB_URL", None)
    far = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    far |= {"IMAGECI_HOME": str(tmp_path / "elsewhere"), "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageci.cli", *argv], capture_output=True, text=True, env=env)

    remote = {**far, "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": reader}
    for argv in (["results", "infra-base:testing", "--json"], ["events", "public-base"], ["results", "public-base"],
                 ["gate", "public-base", "--json"]):
        here, there = cli(local_env, *argv), cli(remote, *argv)
        assert there.returncode == here.returncode, there.stderr
        assert there.stdout == here.stdout, argv
    flaky = cli(remote, "flaky", "--since", "1d").stdout
    assert "infra-base@" in flaky and "public-base@" in flaky and "team-app" not in flaky
    mine = json.loads(cli(remote, "images", "--json").stdout)
    assert {r["name"] for r in mine} == {"infra-base", "public-base"}  # the token's namespace + public
    assert cli(remote, "results", "team-app").returncode == 2  # another namespace: as if absent
    assert cli(remote, "results", "BAD REF").returncode == 2
    assert cli({**remote, "IMAGECI_TOKEN": "ici_" + "0" * 43}, "images").returncode == 9
    refused = cli(remote, "promote", "infra-base:testing", "--force", "--reason", "x")
    assert refused.returncode == 9 and "needs scope 'promote'" in refused.stderr
    gate = cli(remote, "gate", "infra-base:testing")
    assert gate.returncode == 5 and "no gate is defined" in gate.stdout
    # log in (the token checked first, saved 0600), then plain commands go to the server
    bad = subprocess.run([sys.executable, "-m", "imageci.cli", "login", server.url], input="ici_nope\n",
                         capture_output=True, text=True, env=far)
    assert bad.returncode == 9 and not (tmp_path / "config" / "imageci" / "login.json").exists()
    ok = subprocess.run([sys.executable, "-m", "imageci.cli", "login", server.url], input=promoter + "\n",
                        capture_output=True, text=True, env=far)
    assert ok.returncode == 0, ok.stderr
    saved = tmp_path / "config" / "imageci" / "login.json"
    assert saved.stat().st_mode & 0o777 == 0o600 and promoter in saved.read_text()
    with pytest.raises(AssertionError):
        assert promoter in ok.stdout + ok.stderr  # never echoed
    forced = cli(far, "promote", "infra-base:testing", "--force", "--reason", "hotfix")
    assert forced.returncode == 0 and "promoted infra-base@" in forced.stdout, forced.stderr
    trail = cli(local_env, "events", "infra-base:stable").stdout
    assert "cli-promoter" in trail and "forced: hotfix" in trail  # audited as the token's name
    assert cli(far, "logout").returncode == 0 and not saved.exists()
    assert cli(far, "images").stdout.count("\n") == 1  # local again: the far home is empty


# ---- fuzzing from the OpenAPI document: no input makes the server fail (zero 5xx) -------------------

def test_prune_verify_gc_and_doctor_against_a_server(server: Server, tmp_path: Path) -> None:
    cat = Catalog.open(server.settings.db_url)
    for name, namespace in (("stale-app", "apps"), ("stale-infra", "infra")):
        cat.register_version(name, hashlib.sha256(name.encode()).hexdigest(), [NewArtifact(
            "rootfs", "rootfs.tar", hashlib.sha256(name.encode()).hexdigest(), 1)], input_hash=None, definition=None,
            build_info={}, actor="seed")
        cat.set_product(name, namespace=namespace)
    cat.close()
    promoter = _token(server, "janitor-apps", "apps", "promote")
    admin = _token(server, "ops-admin", "infra", "admin")
    reader = _token(server, "just-reading", "apps", "read")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    env |= {"IMAGECI_HOME": str(tmp_path / "laptop"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "IMAGECI_SERVER": server.url}

    def cli(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageci.cli", *args], capture_output=True, text=True,
                              env={**env, "IMAGECI_TOKEN": token})

    here = subprocess.run([sys.executable, "-m", "imageci.cli", "prune", "--older-than", "0s", "--dry-run"],
                          capture_output=True, text=True, env={**os.environ, "IMAGECI_HOME": str(server.home)})
    assert "would retire stale-app@" in here.stdout and "would retire stale-infra@" in here.stdout
    dry = cli(promoter, "prune", "--older-than", "0s", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would retire stale-app@" in dry.stdout and "stale-infra" not in dry.stdout  # only its namespace
    assert cli(reader, "prune", "--older-than", "0s").returncode == 9  # read may not prune
    assert cli(promoter, "prune", "--older-than", "soon").returncode == 2
    done = cli(promoter, "prune", "--older-than", "0s", "--name", "stale-app")
    assert done.returncode == 0 and "retired stale-app@" in done.stdout and "1 version(s) pruned" in done.stdout
    events = server.get(f"{API}/images/stale-app@{done.stdout.split('stale-app@')[1].split()[0]}/events",
                        promoter).json()
    assert events[-1]["actor"] == "janitor-apps" and "pruned" in events[-1]["reason"]
    verified = cli(admin, "verify")
    assert verified.returncode == 0 and "verified" in verified.stdout and "0 corrupt" in verified.stdout
    assert cli(promoter, "verify").returncode == 9  # the store is the whole server's: admin only
    swept = cli(admin, "gc")
    assert swept.returncode == 0 and "leftover(s) removed" in swept.stdout, swept.stderr
    assert cli(reader, "gc").returncode == 9
    doctor = json.loads(cli(reader, "doctor", "--json").stdout)
    assert doctor[-1]["area"] == "server" and doctor[-1]["ok"] and "just-reading" in doctor[-1]["detail"]
    refused = cli("ici_" + "0" * 43, "doctor", "--json")
    assert refused.returncode == 3 and not json.loads(refused.stdout)[-1]["ok"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A server of its own (the fuzzer creates, revokes and promotes) and an admin token of infra."""
    for found in start_server(tmp_path_factory.mktemp("fuzz") / "home"):
        yield found, _token(found, "fuzz-admin", "infra", "admin")


def _documented_error(response: Any) -> bool:
    """A 4xx answer of the API has the documented body, ``{"error", "status", "request_id"}`` (a feed's
    answers are its own format; a blob's ``Range`` error has no body)."""
    if response.status_code < 400 or response.status_code == 416 or response.request.method == "HEAD":
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    return (isinstance(body, dict) and set(body) == {"error", "status", "request_id"}
            and body["status"] == response.status_code and bool(body["error"]))


def test_no_request_makes_the_server_fail(fuzzed: tuple[Server, str]) -> None:
    """Every operation of /openapi.json with generated valid and invalid input, as an admin, anonymous and
    with a forged token: every answer is below 500, and every error has the one documented shape."""
    server, admin = fuzzed
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[tuple[str, str, int, str]] = []
    tried = 0
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(max_examples=25, deadline=None, database=None,
                                 suppress_health_check=list(hypothesis.HealthCheck))
            def check(case: schemathesis.Case) -> None:
                for headers in ({"Authorization": f"Bearer {admin}"}, {}, {"Authorization": "Bearer ici_forged"}):
                    response = case.call(base_url=server.url, headers=headers)
                    if response.status_code >= 500 or not _documented_error(response):
                        failures.append((case.method, case.formatted_path, response.status_code,
                                         response.text[:300]))

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label  # no input to get wrong
                continue
            tried += 1
    assert sorted(set(failures))[:20] == []
    assert tried >= len(operations) + 3  # valid input everywhere; invalid bodies and parameters where typed


def test_every_error_has_one_shape(fuzzed: tuple[Server, str]) -> None:
    """A body missing a field, a wrong type, an unknown route, a wrong method: 4xx with the documented
    body (validation errors are 400 and name the field), and the OpenAPI document says so."""
    server, admin = fuzzed
    auth = {"Authorization": f"Bearer {admin}", "X-Request-ID": "shape-1"}
    missing = httpx.post(f"{server.url}{API}/tokens", headers=auth, json={"namespace": "infra"})
    assert missing.status_code == 400, missing.text
    assert missing.json() == {"error": missing.json()["error"], "status": 400, "request_id": "shape-1"}
    assert "body.name" in missing.json()["error"] and "required" in missing.json()["error"].lower()
    typed = httpx.get(f"{server.url}{API}/runs/not-a-number", headers=auth)
    assert typed.status_code == 400 and _documented_error(typed) and "path.run_id" in typed.json()["error"]
    broken = httpx.post(f"{server.url}{API}/tokens", headers={**auth, "Content-Type": "application/json"},
                        content=b"{not json")
    assert broken.status_code == 400 and _documented_error(broken)
    for response in (httpx.get(f"{server.url}{API}/no-such-thing", headers=auth),
                     httpx.delete(f"{server.url}/healthz", headers=auth)):
        assert response.status_code in (404, 405) and _documented_error(response), response.text
    document = httpx.get(f"{server.url}/openapi.json").json()
    responses = [op["responses"] for path in document["paths"].values() for op in path.values()]
    assert not any("422" in r for r in responses)
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["paths"][f"{API}/tokens"]["post"]["responses"]["400"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/Problem"}


# ---- publishing ----------------------------------------------------------------------------------------

def _put(server: Server, token: str, data: bytes, digest: str | None = None, **headers: str) -> httpx.Response:
    d = digest or hashlib.sha256(data).hexdigest()
    return httpx.put(f"{server.url}{API}/blobs/sha256:{d}", content=data, timeout=30,
                     headers={"Authorization": f"Bearer {token}", **headers})


def _leftovers(server: Server) -> list[Path]:
    return list((server.settings.store_dir / "tmp").iterdir())


def test_publishing_uploads_checked_blobs_then_commits_in_one_step(server: Server) -> None:
    pub = _token(server, "pub-apps", "apps", "publish")
    reader = _token(server, "pub-reader", "apps", "read")
    rootfs, log = b"rootfs bytes " * 1000, b"build log\n"
    auth = {"Authorization": f"Bearer {pub}"}
    assert _put(server, reader, rootfs).status_code == 403  # read may not upload
    wrong = _put(server, pub, rootfs, digest="0" * 64)
    assert wrong.status_code == 400 and "sha256 is" in wrong.json()["error"]
    assert _put(server, pub, b"x" * (2 << 20)).status_code == 413  # past IMAGECI_MAX_UPLOAD (1M)
    chunked = httpx.put(f"{server.url}{API}/blobs/sha256:{hashlib.sha256(b'y' * (2 << 20)).hexdigest()}",
                        content=iter([b"y" * (1 << 19)] * 4), headers=auth, timeout=30)  # no Content-Length
    assert chunked.status_code == 413
    # a truncated upload: the client says 5000 bytes, sends 100 and goes away
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as raw:
        raw.sendall(f"PUT {API}/blobs/sha256:{'1' * 64} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {pub}\r\n"
                    "Content-Length: 5000\r\n\r\n".encode() + b"z" * 100)
    time.sleep(1)
    assert _leftovers(server) == [] and not server.settings.store_dir.joinpath("blobs", "sha256", "11").exists()
    body = {"name": "uploaded-app", "digest": hashlib.sha256(rootfs).hexdigest(), "definition": "name: x\n",
            "artifacts": [{"kind": "rootfs", "filename": "rootfs.tar", "digest": hashlib.sha256(rootfs).hexdigest(),
                           "size": len(rootfs)},
                          {"kind": "build-log", "filename": "build.log", "digest": hashlib.sha256(log).hexdigest(),
                           "size": len(log)}]}
    early = httpx.post(f"{server.url}{API}/versions", json=body, headers=auth)
    assert early.status_code == 400 and "was not uploaded" in early.json()["error"]
    for blob in (rootfs, log):
        assert httpx.head(f"{server.url}{API}/blobs/sha256:{hashlib.sha256(blob).hexdigest()}",
                          headers=auth).status_code == 404
        stored = _put(server, pub, blob)
        assert stored.status_code == 201 and stored.json()["size"] == len(blob)
    head = httpx.head(f"{server.url}{API}/blobs/sha256:{hashlib.sha256(rootfs).hexdigest()}", headers=auth)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(rootfs))
    assert "uploaded-app" not in {r["name"] for r in server.get(f"{API}/images", pub).json()}  # not committed
    for bad_name in ("../../etc/passwd", "a/b", ".hidden", "x\x00y", ""):
        hostile = {**body, "artifacts": [{**body["artifacts"][0], "filename": bad_name}]}
        r = httpx.post(f"{server.url}{API}/versions", json=hostile, headers=auth)
        assert r.status_code == 400 and "file name" in r.json()["error"], bad_name
    assert httpx.post(f"{server.url}{API}/versions", json={**body, "name": "Bad Name"}, headers=auth
                      ).status_code == 400
    first = httpx.post(f"{server.url}{API}/versions", json=body, headers=auth)
    assert first.status_code == 201, first.text
    again = httpx.post(f"{server.url}{API}/versions", json=body, headers=auth)
    assert again.status_code == 200 and again.json()["image"] == first.json()["image"]  # idempotent
    assert first.json()["namespace"] == "apps" and first.json()["state"] == "testing"
    seen = [r for r in server.get(f"{API}/images", reader).json() if r["name"] == "uploaded-app"]
    assert len(seen) == 1 and seen[0]["channels"] == ["testing"]
    events = server.get(f"{API}/images/uploaded-app/events", reader).json()
    assert events[-1]["actor"] == "pub-apps"  # audited as the token's name
    intruder = _token(server, "pub-infra", "infra", "publish")
    r = httpx.post(f"{server.url}{API}/versions", json=body, headers={"Authorization": f"Bearer {intruder}"})
    assert r.status_code == 403  # apps' product: infra may not publish to it
    assert _leftovers(server) == []


def test_uploads_never_committed_are_garbage_that_gc_removes_after_its_grace(server: Server) -> None:
    pub = _token(server, "pub-gc", "apps", "publish")
    auth = {"Authorization": f"Bearer {pub}"}
    blobs = {what: what.encode() * 500 for what in ("orphan", "young", "headed", "kept")}
    digests = {what: hashlib.sha256(data).hexdigest() for what, data in blobs.items()}
    for data in blobs.values():
        assert _put(server, pub, data).status_code == 201
    kept = {"name": "gc-kept", "digest": digests["kept"], "artifacts": [
        {"kind": "rootfs", "filename": "rootfs.tar", "digest": digests["kept"], "size": len(blobs["kept"])}]}
    assert httpx.post(f"{server.url}{API}/versions", json=kept, headers=auth).status_code == 201
    path = {what: server.settings.store_dir / "blobs" / "sha256" / d[:2] / d for what, d in digests.items()}
    two_hours_ago = time.time() - 7200
    for what in ("orphan", "headed", "kept"):
        os.utime(path[what], (two_hours_ago, two_hours_ago))
    # a publish that finds the blob already there (HEAD) is about to commit on it: its grace starts again
    assert httpx.head(f"{server.url}{API}/blobs/sha256:{digests['headed']}", headers=auth).status_code == 200
    home = {**os.environ, "IMAGECI_HOME": str(server.home)}
    busy = subprocess.run([sys.executable, "-m", "imageci.cli", "gc"], env=home, capture_output=True, text=True)
    assert busy.returncode == 2 and "another imageci is running" in busy.stderr  # the server holds the home
    done = subprocess.run([sys.executable, "-m", "imageci.cli", "gc", "--force"], env=home, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert f"removed unreferenced blob sha256:{digests['orphan']}" in done.stdout
    assert not path["orphan"].exists()
    assert path["young"].exists() and path["headed"].exists() and path["kept"].exists()
    got = httpx.get(f"{server.url}{API}/images/gc-kept/artifacts/rootfs.tar", headers=auth)
    assert got.status_code == 200 and got.content == blobs["kept"]


def test_a_disk_image_is_published_by_its_disk_and_a_damaged_disk_is_refused(server: Server,
                                                                            tmp_path: Path) -> None:
    pub = _token(server, "disk-pub", "apps", "publish")
    auth = {"Authorization": f"Bearer {pub}"}
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x61 0 64k", str(disk)], check=True, capture_output=True)
    rootfs = b"a root filesystem " * 100
    sound = disk.read_bytes()
    damaged = corrupt(disk).read_bytes()
    for blob in (sound, damaged, rootfs):
        assert _put(server, pub, blob).status_code == 201

    def body(disk_bytes: bytes, digest: bytes) -> dict[str, object]:
        return {"name": "disk-app", "digest": hashlib.sha256(digest).hexdigest(),
                "artifacts": [{"kind": "disk", "filename": "disk.qcow2", "size": len(disk_bytes),
                               "digest": hashlib.sha256(disk_bytes).hexdigest()},
                              {"kind": "rootfs", "filename": "rootfs.tar", "size": len(rootfs),
                               "digest": hashlib.sha256(rootfs).hexdigest()}]}

    by_rootfs = httpx.post(f"{server.url}{API}/versions", json=body(sound, rootfs), headers=auth)
    assert by_rootfs.status_code == 400 and "whose digest is the image's" in by_rootfs.json()["error"]
    refused = httpx.post(f"{server.url}{API}/versions", json=body(damaged, damaged), headers=auth)
    assert refused.status_code == 400 and "is damaged: qemu-img check found" in refused.json()["error"]
    assert str(server.settings.store_dir) not in refused.json()["error"]  # the server's paths are its own
    done = httpx.post(f"{server.url}{API}/versions", json=body(sound, sound), headers=auth)
    assert done.status_code in (200, 201), done.text
    [row] = [r for r in server.get(f"{API}/images", pub).json() if r["name"] == "disk-app"]
    assert row["digest"] == f"sha256:{hashlib.sha256(sound).hexdigest()}"


def test_imageci_publish_pushes_a_local_version_to_the_server(server: Server, tmp_path: Path) -> None:
    pub = _token(server, "push-bot", "infra", "publish")
    home = tmp_path / "laptop"
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    settings.ensure()
    from imageci.store.blobs import BlobStore

    store = BlobStore(settings.store_dir)
    rootfs = store.put_bytes(b"a laptop's rootfs " * 5000)
    cat = Catalog.open(settings.db_url)
    v = cat.register_version("laptop-image", rootfs.digest, [NewArtifact("rootfs", "rootfs.tar", rootfs.digest,
                                                                         rootfs.size)],
                             input_hash=None, definition="name: laptop-image\nsuite: bookworm\n", build_info={})
    cat.close()
    env = {k: val for k, val in os.environ.items() if not k.startswith("IMAGECI_")}
    env |= {"IMAGECI_HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    argv = [sys.executable, "-m", "imageci.cli", "--server", server.url, "publish", f"laptop-image@{v.serial}"]
    nowhere = subprocess.run(argv[:3] + argv[5:], capture_output=True, text=True, env=env)
    assert nowhere.returncode == 2 and "no server to publish to" in nowhere.stderr
    denied = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert denied.returncode == 9  # no token
    done = subprocess.run(argv, capture_output=True, text=True, env={**env, "IMAGECI_TOKEN": pub})
    assert done.returncode == 0 and "published laptop-image@" in done.stdout, done.stderr
    again = subprocess.run(argv, capture_output=True, text=True, env={**env, "IMAGECI_TOKEN": pub})
    assert again.returncode == 0 and "already published" in again.stdout
    there = [r for r in server.get(f"{API}/images", pub).json() if r["name"] == "laptop-image"]
    assert there and there[0]["digest"] == f"sha256:{rootfs.digest}" and there[0]["namespace"] == "infra"
    assert server.settings.store_dir.joinpath("blobs", "sha256", rootfs.digest[:2], rootfs.digest).read_bytes() \
        == store.path(rootfs.digest).read_bytes()


def test_imageci_import_publish_sends_an_image_built_elsewhere_to_the_server(server: Server,
                                                                             tmp_path: Path) -> None:
    import gzip
    import io
    import tarfile

    pub = _token(server, "import-bot", "apps", "publish")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("etc/os-release", b"ID=elsewhere\n"), ("usr/bin/app", b"#!/bin/sh\n"),
                           ("sbin/init", b"#!/bin/sh\n"),  # an LXD feed lists only what lxc launch can start
                           ("var/lib/dpkg/status", b"Package: app\nStatus: install ok installed\nVersion: 1.0-1\n"
                                                   b"Architecture: amd64\nSource: app-src\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "rootfs.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    env = {k: val for k, val in os.environ.items() if not k.startswith("IMAGECI_")}
    env |= {"IMAGECI_HOME": str(tmp_path / "builder"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": pub}
    done = subprocess.run([sys.executable, "-m", "imageci.cli", "import", "elsewhere-app",
                           str(tmp_path / "rootfs.tar.gz"), "--publish"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported elsewhere-app@" in done.stdout and "published elsewhere-app@" in done.stdout
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    there = [r for r in server.get(f"{API}/images", pub).json() if r["name"] == "elsewhere-app"]
    assert there and there[0]["digest"] == f"sha256:{digest}" and there[0]["namespace"] == "apps"
    files = {a["filename"] for a in server.get(f"{API}/images/elsewhere-app/artifacts", pub).json()}
    assert files == {"rootfs.tar", "config.json", "lxd.tar.xz", "incus.tar.xz", "root.squashfs"}
    feed = server.get("/lxd/apps/testing/streams/v1/images.json", pub).json()["products"]
    (product,) = feed.values()
    (version,) = product["versions"].values()  # its fingerprint is computed on the server, from the bytes
    meta, squash = (server.get(f"/lxd/apps/testing/{version['items'][f]['path']}", pub).content
                    for f in ("lxd.tar.xz", "root.squashfs"))
    assert version["items"]["lxd.tar.xz"]["combined_squashfs_sha256"] == hashlib.sha256(meta + squash).hexdigest()
    # its BOM, read on the server from the uploaded bytes, is the one read here at import
    here = subprocess.run([sys.executable, "-m", "imageci.cli", "bom", "elsewhere-app:testing", "-f", "json"],
                          capture_output=True, text=True, env={k: v for k, v in env.items() if k != "IMAGECI_SERVER"})
    remote = subprocess.run([sys.executable, "-m", "imageci.cli", "bom", "elsewhere-app:testing", "-f", "json"],
                            capture_output=True, text=True, env=env)
    assert here.returncode == 0 and remote.returncode == 0, here.stderr + remote.stderr
    assert json.loads(here.stdout)["packages"] == json.loads(remote.stdout)["packages"]
    assert [p["purl"] for p in json.loads(remote.stdout)["packages"]] == [
        "pkg:deb/elsewhere/app@1.0-1?arch=amd64&distro=elsewhere&upstream=app-src"]
    spdx = server.get(f"{API}/images/elsewhere-app/bom", pub, params={"format": "spdx"})
    assert spdx.status_code == 200 and spdx.json()["spdxVersion"] == "SPDX-2.3"
    table = server.get(f"{API}/images/elsewhere-app/bom", pub, params={"format": "table"})
    assert table.status_code == 400 and "for terminals" in table.json()["error"]
    bare = server.get(f"{API}/images/infra-base/bom", _token(server, "bom-reader", "infra", "read"))
    assert bare.status_code == 500 and "missing from the store" in bare.json()["error"]  # the seed has no bytes
    same = server.get(f"{API}/diff", pub, params={"before": "elsewhere-app:testing", "after": "elsewhere-app:testing"})
    assert same.status_code == 200 and same.json()["packages"] == [] and same.json()["files"] == []


def test_artifacts_download_with_range_and_etag(server: Server) -> None:
    reader = _token(server, "dl-reader", "infra", "read")
    s = Session.open(server.settings)
    try:
        data = b"".join(bytes([i % 251]) * 1000 for i in range(300))
        blob = s.store.put_bytes(data)
        v = s.catalog.register_version("public-base", blob.digest, [NewArtifact("rootfs", "rootfs.tar", blob.digest,
                                                                               blob.size)],
                                       input_hash=None, definition="name: public-base\nsuite: bookworm\n",
                                       build_info={})
    finally:
        s.close()
    ref = f"public-base@{v.serial}"
    listing = server.get(f"{API}/images/{ref}/artifacts").json()
    assert listing == [{"kind": "rootfs", "filename": "rootfs.tar", "digest": f"sha256:{blob.digest}",
                        "size": len(data)}]
    whole = server.get(f"{API}/images/{ref}/artifacts/rootfs.tar")  # public: no token needed
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["etag"] == f'"{blob.digest}"'
    part = server.get(f"{API}/images/{ref}/artifacts/rootfs.tar", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.content == data[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    by_digest = server.get(f"{API}/images/sha256:{blob.digest}/artifacts/rootfs.tar")
    assert by_digest.content == data
    assert server.get(f"{API}/images/{ref}/artifacts/..%2F..%2Fcatalog.db").status_code == 404
    assert server.get(f"{API}/images/{ref}/artifacts/nope.tar").status_code == 404
    private = server.get(f"{API}/images/infra-base:testing/artifacts")
    assert private.status_code == 404  # anonymous: infra-base is private
    assert server.get(f"{API}/images/infra-base:testing/artifacts", reader).status_code == 200


# ---- results recorded from elsewhere -----------------------------------------------------------------

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
    assert _leftovers(server) == []
    with pytest.raises(StopIteration):
        next(running)  # the fixture's side: the server exits 0 after SIGTERM


@pytest.mark.root
@pytest.mark.slow
def test_a_remote_run_fetches_by_digest_runs_here_and_records_there(tmp_path: Path) -> None:
    """`imageci run` against a server: the image comes by digest (verified), the tests run on this
    machine's sandbox, and the server gets the run, every attempt and its log."""
    from conftest import build_example, make_env

    built_env = make_env(tmp_path / "server-home")
    built = build_example(built_env)
    built_env.catalog.close()
    running = start_server(tmp_path / "server-home")
    server = next(running)
    try:
        tester = _token(server, "laptop-tester", "default", "test")
        laptop = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
        laptop |= {"IMAGECI_HOME": str(tmp_path / "laptop"), "IMAGECI_SERVER": server.url,
                   "IMAGECI_TOKEN": tester, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
        if "IMAGECI_TEST_BUILD_CACHE" in os.environ:
            laptop["IMAGECI_TEST_BUILD_CACHE"] = os.environ["IMAGECI_TEST_BUILD_CACHE"]
        ref = f"{built.product.name}:testing"
        (tmp_path / "os.yaml").write_text("schemaVersion: 2.0.0\nfileExistenceTests:\n  - name: os-release\n"
                                          "    path: /etc/os-release\n    shouldExist: true\n")
        from conftest import write_suite

        suite = write_suite(tmp_path / "my-suite", {"os-release": "#!/bin/sh\ngrep -q ^ID=debian /etc/os-release\n",
                                                    "locale": "#!/bin/sh\ntest -e /etc/timezone\n"})
        res = subprocess.run([sys.executable, "-m", "imageci.cli", "test", ref, "--suite", str(suite),
                              "--structure", str(tmp_path / "os.yaml")],
                             capture_output=True, text=True, env=laptop, timeout=900)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"recorded on {server.url}: run" in res.stdout
        there = server.get(f"{API}/images/{ref}/results", tester).json()
        run = there["runs"][-1]
        assert run["actor"] == "laptop-tester" and run["status"] == "finished" and run["exit_code"] == 0
        mine = [a for a in there["attempts"] if a["run"] == run["run"]]
        assert sorted(a["test"] for a in mine) == ["cst:existence/os-release", "locale", "os-release"]
        assert all(a["verdict"] == "pass" and a["log"] for a in mine)
        # its reproducer, alone, re-runs it from another machine: another home, the laptop's gone
        script = Path(shlex.split(res.stdout.split("re-run it: ")[1].splitlines()[0])[0])
        assert f"--server {server.url}" in script.read_text() and str(tmp_path) not in script.read_text()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        shutil.copy(script, elsewhere / "reproduce.sh")
        shutil.rmtree(tmp_path / "laptop")
        (tmp_path / "os.yaml").unlink()
        shutil.rmtree(suite)
        other = {k: v for k, v in laptop.items() if k != "IMAGECI_SERVER"}
        other |= {"IMAGECI_HOME": str(tmp_path / "other-machine"),
                  "IMAGECI": str(Path(sys.executable).parent / "imageci")}
        again = subprocess.run(["sh", str(elsewhere / "reproduce.sh")], capture_output=True, text=True, env=other,
                               cwd=elsewhere, timeout=900)
        assert again.returncode == 0, again.stdout + again.stderr
        rerun = server.get(f"{API}/images/{ref}/results", tester).json()
        assert len(rerun["runs"]) == len(there["runs"]) + 1 and rerun["runs"][-1]["exit_code"] == 0
        assert sorted(a["test"] for a in rerun["attempts"] if a["run"] == rerun["runs"][-1]["run"]) == \
            ["cst:existence/os-release", "locale", "os-release"]
        local = subprocess.run([sys.executable, "-m", "imageci.cli", "--server", "http://127.0.0.1:1", "images"],
                               capture_output=True, text=True, env={**laptop, "IMAGECI_SERVER": ""})
        assert local.returncode == 3 and "cannot reach" in local.stderr  # a dead server: exit 3, said plainly
        cached = Catalog.open(f"sqlite:///{tmp_path / 'other-machine' / 'catalog.db'}")
        fetched = cached.find_by_digest(built.product.name, built.digest)
        assert fetched is not None and {a.digest for a in fetched.artifacts} == {a.digest for a in built.artifacts}
        cached.close()
    finally:
        with pytest.raises(StopIteration):
            next(running)


def test_logs_are_served_to_whoever_may_see_the_image(server: Server, tmp_path: Path) -> None:
    tester = _token(server, "log-tester", "apps", "test")
    outsider = _token(server, "log-outsider", "infra", "read")
    auth = {"Authorization": f"Bearer {tester}"}
    run = httpx.post(f"{server.url}{API}/images/team-app:testing/runs", json={}, headers=auth).json()["run"]
    for n, text in ((1, "first try: connection refused\n"), (2, "second try: ok \u2713\n")):
        r = httpx.post(f"{server.url}{API}/runs/{run}/attempts", headers=auth, json={
            "test": "cst:command/net check", "test_digest": "d", "testbed": "laptop", "attempt": n,
            "verdict": "fail" if n == 1 else "pass", "started": "2026-11-23T10:00:00Z",
            "ended": "2026-11-23T10:00:01Z", "log": text})
        assert r.status_code == 201, r.text
    results = server.get(f"{API}/images/team-app:testing/results", tester).json()
    mine = [a for a in results["attempts"] if a["run"] == run]
    assert [a["log"].startswith(f"{server.url}{API}/images/team-app@") for a in mine] == [True, True]
    assert httpx.get(mine[0]["log"], headers=auth).text == "first try: connection refused\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    env |= {"IMAGECI_HOME": str(tmp_path / "laptop"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": tester}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageci.cli", *args], capture_output=True, text=True,
                              env={**env, **extra})

    latest = cli("log", "team-app:testing", "cst:command/net check")
    assert latest.returncode == 0 and latest.stdout == "second try: ok \u2713\n", latest.stderr
    first = cli("log", "team-app:testing", "cst:command/net check", "--run", str(run), "--attempt", "1")
    assert first.stdout == "first try: connection refused\n"
    here = subprocess.run([sys.executable, "-m", "imageci.cli", "log", "team-app:testing", "cst:command/net check"],
                          capture_output=True, text=True, env={**os.environ, "IMAGECI_HOME": str(server.home)})
    assert here.returncode == 0 and here.stdout == latest.stdout  # on the server's machine, the same bytes
    missing = cli("log", "team-app:testing", "no-such-test")
    assert missing.returncode == 2 and "no attempt of 'no-such-test'" in missing.stderr
    hidden = cli("log", "team-app:testing", "cst:command/net check", IMAGECI_TOKEN=outsider)
    assert hidden.returncode == 2 and "unknown image reference 'team-app:testing'" in hidden.stderr
    assert httpx.get(mine[0]["log"], headers={"Authorization": f"Bearer {outsider}"}).status_code == 404
    assert httpx.get(mine[0]["log"]).status_code == 404  # anonymous: team-app is private


@pytest.mark.root
@pytest.mark.slow
def test_a_pipeline_against_a_server_builds_here_and_is_promoted_there(tmp_path: Path) -> None:
    """build here (the shared build cache) → publish → test here, recorded there → the server judges
    the gate on its evidence and promotes; the same again says it is already stable."""
    running = start_server(tmp_path / "server-home")
    try:
        _pipeline_against(next(running), tmp_path)
    finally:
        with pytest.raises(StopIteration):
            next(running)


def _pipeline_against(server: Server, tmp_path: Path) -> None:
    from conftest import BUILD_CACHE, EXAMPLE, write_suite

    bot = _token(server, "pipeline-bot", "infra", "publish,test,promote")
    suite = write_suite(tmp_path / "suite", {"os-release": "#!/bin/sh\ngrep -q ^ID=debian /etc/os-release\n",
                                             "timezone": "#!/bin/sh\ntest \"$(cat /etc/timezone)\" = Etc/UTC\n"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    env |= {"IMAGECI_HOME": str(tmp_path / "ci-runner"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "IMAGECI_BUILD_CACHE": str(BUILD_CACHE), "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": bot}
    argv = [sys.executable, "-m", "imageci.cli", "pipeline", str(EXAMPLE / "image.yaml"), "--suite", str(suite)]
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"recorded on {server.url}: run" in first.stdout and "promoted debian-bookworm-minimal@" in first.stdout
    [stable] = [r for r in server.get(f"{API}/images", bot, params={"name": "debian-bookworm-minimal"}).json()
                if r["state"] == "stable"]
    assert stable["namespace"] == "infra"
    events = server.get(f"{API}/images/debian-bookworm-minimal:stable/events", bot).json()
    assert events[-1]["actor"] == "pipeline-bot" and "gate held (evidence up to attempt" in events[-1]["reason"]
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0 and "is already stable" in again.stdout, again.stdout + again.stderr


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


SCOPES = ("read", "publish", "test", "promote", "admin")


def test_the_scope_by_namespace_matrix(server: Server) -> None:
    """Every scope, in the product's namespace and in another: reading, publishing, recording a run,
    promoting and making tokens are allowed exactly when the scope (or admin) is held in that namespace."""
    uploader = _token(server, "matrix-uploader", "infra", "publish")
    rootfs = b"matrix rootfs"
    assert _put(server, uploader, rootfs).status_code == 201
    digest = hashlib.sha256(rootfs).hexdigest()
    commit = {"name": "infra-base", "digest": digest,
              "artifacts": [{"kind": "rootfs", "filename": "rootfs.tar", "digest": digest, "size": len(rootfs)}]}
    for home_ns, other in (("infra", "apps"),):
        for scope in SCOPES:
            for ns in (home_ns, other):
                token = _token(server, f"mx-{scope}-{ns}", ns, scope)
                auth = {"Authorization": f"Bearer {token}"}
                own = ns == "infra"  # infra-base lives in infra
                may = {s: own and (scope == s or scope == "admin") for s in SCOPES}
                read = server.get(f"{API}/images/infra-base:stable/results", token).status_code
                assert read == (200 if own else 404), (scope, ns, "read")
                pub = httpx.post(f"{server.url}{API}/versions", json=commit, headers=auth).status_code
                assert (pub in (200, 201)) == may["publish"] and (pub == 403 or may["publish"]), (scope, ns, pub)
                run = httpx.post(f"{server.url}{API}/images/infra-base:stable/runs", json={}, headers=auth)
                assert run.status_code == (201 if may["test"] else 403 if own else 404), (scope, ns, "test")
                promote = httpx.post(f"{server.url}{API}/images/infra-base:stable/promote",
                                     json={"force": True, "reason": "matrix"}, headers=auth).status_code
                # allowed: refused on its merits (already stable); not allowed: 403, or 404 when invisible
                assert promote == (400 if may["promote"] else 403 if own else 404), (scope, ns, "promote")
                made = httpx.post(f"{server.url}{API}/tokens", headers=auth,
                                  json={"name": f"mx-child-{scope}-{ns}", "namespace": "infra"}).status_code
                assert made == (201 if may["admin"] else 403), (scope, ns, "admin")


def test_vulnerability_feeds_over_the_api_need_admin_and_the_remote_cli_sends_the_file(server: Server,
                                                                                       tmp_path: Path) -> None:
    feed = REPO / "tests" / "data" / "vulns" / "debian-tracker.json"
    reader = _token(server, "vuln-reader", "infra", "read")
    admin = _token(server, "vuln-admin", "infra", "admin")
    refused = httpx.post(f"{server.url}{API}/vulndb", content=feed.read_bytes(),
                         headers={"Authorization": f"Bearer {reader}"}, timeout=30)
    assert refused.status_code == 403 and "scope 'admin'" in refused.json()["error"]
    bad = httpx.post(f"{server.url}{API}/vulndb", content=b"[1, 2]", headers={"Authorization": f"Bearer {admin}"},
                     timeout=30)
    assert bad.status_code == 400 and "neither the Debian Security Tracker" in bad.json()["error"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    env |= {"IMAGECI_HOME": str(tmp_path / "laptop"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
            "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": admin}
    done = subprocess.run([sys.executable, "-m", "imageci.cli", "vulndb", "import", str(feed), "--json"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 9 and json.loads(done.stdout)["by"] == "vuln-admin"
    listed = server.get(f"{API}/vulndb", reader).json()
    assert [(f["name"], f["records"], f["format"]) for f in listed] == [("debian-tracker", 9, "debian-tracker")]
    denied = subprocess.run([sys.executable, "-m", "imageci.cli", "vulndb", "import", str(feed)],
                            capture_output=True, text=True, env={**env, "IMAGECI_TOKEN": reader})
    assert denied.returncode == 9 and "admin" in denied.stderr
