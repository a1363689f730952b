"""`imageci serve`: the HTTP API on a real Uvicorn on 127.0.0.1, over the same
application layer as the CLI; tokens, scopes, namespaces and channel followers; no request makes it fail."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis

from imageci.app import queries, tokens
from imageci.app.session import Session
from imageci.store.catalog import Catalog

from serverkit import API, Server, _token, put_blob, start_server


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


SCOPES = ("read", "publish", "test", "promote", "admin")


def test_the_scope_by_namespace_matrix(server: Server) -> None:
    """Every scope, in the product's namespace and in another: reading, publishing, recording a run,
    promoting and making tokens are allowed exactly when the scope (or admin) is held in that namespace."""
    uploader = _token(server, "matrix-uploader", "infra", "publish")
    rootfs = b"matrix rootfs"
    assert put_blob(server, uploader, rootfs).status_code == 201
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


def test_a_query_declared_once_answers_alike_here_through_the_server_and_over_http(server: Server,
                                                                                   tmp_path: Path) -> None:
    """`imageci runs NAME` (``app.queries.runs_op``): the CLI on the server's home, the CLI through the
    server and the API give the same rows, newest first; a product the token may not see is unknown."""
    reader = _token(server, "runs-reader", "infra", "read")
    local_env = {**os.environ, "IMAGECI_HOME": str(server.home)}
    local_env.pop("IMAGECI_DB_URL", None)
    far = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    remote = far | {"IMAGECI_HOME": str(tmp_path / "elsewhere"), "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": reader,
                    "XDG_CONFIG_HOME": str(tmp_path / "config")}

    def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imageci.cli", *argv], capture_output=True, text=True, env=env)

    here = cli(local_env, "runs", "infra-base", "--json")
    there = cli(remote, "runs", "infra-base", "--json")
    assert here.returncode == there.returncode == 0, here.stderr + there.stderr
    rows = json.loads(here.stdout)
    assert json.loads(there.stdout) == rows
    assert server.get(f"{API}/runs?name=infra-base", reader).json() == rows
    assert [r["run"] for r in rows] == sorted((r["run"] for r in rows), reverse=True) and len(rows) >= 2
    assert {r["image"].split("@")[0] for r in rows} == {"infra-base"} and "finished" in {r["status"] for r in rows}
    assert [r["run"] for r in json.loads(cli(remote, "runs", "infra-base", "--limit", "1", "--json").stdout)] == \
        [rows[0]["run"]]
    table = cli(remote, "runs", "infra-base").stdout
    assert table.splitlines()[0].split() == ["RUN", "IMAGE", "STATUS", "EXIT", "ACTOR", "STARTED", "ENDED"]
    hidden = cli(remote, "runs", "team-app")  # another namespace: as if it did not exist
    assert hidden.returncode == 2 and "unknown image reference 'team-app'" in hidden.stderr
    assert server.get(f"{API}/runs?name=team-app").status_code == 404
    assert server.get(f"{API}/runs?name=infra-base&limit=0", reader).status_code == 400
