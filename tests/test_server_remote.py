"""The CLI against a server (`--server`, `imageci login`): the same commands print and exit as on
the local home; runs fetched by digest, tested here and recorded there; pipelines promoted there."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from imageci.app import queries
from imageci.app.session import Session
from imageci.config import Settings
from imageci.store.catalog import Catalog, NewArtifact

from conftest import REPO
from serverkit import API, Server, _token, start_server


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
        _the_reproducer_reruns_it_from_another_machine(server, tester, ref, res.stdout, laptop, tmp_path, there)
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


def _the_reproducer_reruns_it_from_another_machine(server: Server, tester: str, ref: str, res_stdout: str,
                                                   laptop: dict[str, str], tmp_path: Path, there: dict[str, Any]
                                                   ) -> None:
    """Its reproducer, alone, re-runs it from another machine: another home, the laptop's gone."""
    script = Path(shlex.split(res_stdout.split("re-run it: ")[1].splitlines()[0])[0])
    assert f"--server {server.url}" in script.read_text() and str(tmp_path) not in script.read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(script, elsewhere / "reproduce.sh")
    shutil.rmtree(tmp_path / "laptop")
    (tmp_path / "os.yaml").unlink()
    shutil.rmtree(tmp_path / "my-suite")
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
