"""The object store failing under a running system: away during a publish (503
with a clear message, nothing committed, the retried publish succeeds), away
during a test's fetch (each attempt an ``error`` of the testbed, never a
``fail``), and an object whose bytes were changed in the bucket (refused on
fetch, named by ``verify``)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from imageci.app.session import Session
from imageci.config import Settings
from imageci.fs import safe_rmtree

from conftest import busybox_rootfs, write_suite
from s3kit import BUCKET, S3Server
from serverkit import API, _token, leftovers, put_blob, start_server

pytestmark = [pytest.mark.root]


def _cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageci.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=600)


def _home_env(home: Path, s3: S3Server, prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGECI_", "AWS_"))}
    return env | {"IMAGECI_HOME": str(home), **s3.env(prefix)}


def test_a_publish_while_the_store_is_away_is_refused_with_503_and_commits_nothing(s3: S3Server,
                                                                                   tmp_path: Path) -> None:
    for server in start_server(tmp_path / "server", None, seed=False, **s3.env("faults-publish")):
        pub = _token(server, "faults-pub", "default", "publish")
        rootfs = b"a rootfs published while the store was away " * 1000
        s3.stop()
        try:
            refused = put_blob(server, pub, rootfs)
            assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
            assert "object store could not be reached" in refused.json()["error"]
            assert str(s3.ports["s3"]) not in refused.text  # the client learns no address
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 503 and ready.json()["store"] != "writable"
        finally:
            s3.start()
        assert leftovers(server) == []
        digest = hashlib.sha256(rootfs).hexdigest()
        body = {"name": "while-away", "digest": digest, "artifacts": [
            {"kind": "rootfs", "filename": "rootfs.tar", "digest": digest, "size": len(rootfs)}]}
        early = httpx.post(f"{server.url}{API}/versions", json=body, headers={"Authorization": f"Bearer {pub}"})
        assert early.status_code == 400 and "was not uploaded" in early.json()["error"]  # nothing committed
        assert put_blob(server, pub, rootfs).status_code == 201  # the retried publish
        done = httpx.post(f"{server.url}{API}/versions", json=body, headers={"Authorization": f"Bearer {pub}"})
        assert done.status_code == 201, done.text
        assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_a_test_whose_image_cannot_be_fetched_is_an_error_of_the_testbed(s3: S3Server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _home_env(home, s3, "faults-fetch")
    made = _cli(env, "import", "fetched", str(busybox_rootfs(tmp_path / "rootfs.tar", "fetch")))
    assert made.returncode == 0, made.stderr
    safe_rmtree(home / "store" / "cache")  # another machine's home: nothing cached yet
    suite = write_suite(tmp_path / "suite", {"passes": "#!/bin/sh\ntrue\n"})
    s3.stop()
    try:
        ran = _cli(env, "test", "fetched:testing", "--suite", str(suite))
    finally:
        s3.start()
    Path("/tmp/exp/ran.txt").write_text(ran.stdout + ran.stderr)
    assert ran.returncode == 3, ran.stdout + ran.stderr  # an error, not a failure (1)
    results = json.loads(_cli(env, "results", "fetched:testing", "--json").stdout)
    assert len(results["attempts"]) == 1, (ran.stdout + ran.stderr, results)
    [attempt] = results["attempts"]
    assert attempt["verdict"] == "error" and "could not be fetched" in attempt["reason"], attempt
    again = _cli(env, "test", "fetched:testing", "--suite", str(suite))
    assert again.returncode == 0, again.stdout + again.stderr  # the store is back: fetched, hashed, run


def test_an_object_changed_in_the_bucket_is_refused_on_fetch_and_named_by_verify(s3: S3Server,
                                                                                   tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _home_env(home, s3, "faults-tamper")
    made = _cli(env, "import", "tampered", str(busybox_rootfs(tmp_path / "rootfs.tar", "tamper")))
    assert made.returncode == 0, made.stderr
    settings = Settings.load(home, env=env)
    s = Session.open(settings)
    try:
        rootfs = next(a for a in s.catalog.resolve("tampered:testing").artifacts if a.kind == "rootfs")
    finally:
        s.close()
    s3.client().put_object(Bucket=BUCKET, Key=f"faults-tamper/blobs/sha256/{rootfs.digest[:2]}/{rootfs.digest}",
                           Body=b"not the image that was tested")
    safe_rmtree(home / "store" / "cache")
    for server in start_server(tmp_path / "replica", f"sqlite:///{home / 'catalog.db'}", seed=False,
                               **s3.env("faults-tamper")):
        reader = _token(server, "faults-reader", "default", "read")
        got = server.get(f"{API}/images/tampered:testing/artifacts/rootfs.tar", reader)
        assert got.status_code == 500 and "changed in the object store" in got.json()["error"], got.text
    verify = _cli(env, "verify")
    assert verify.returncode == 7 and rootfs.digest in verify.stdout + verify.stderr, verify.stdout + verify.stderr
