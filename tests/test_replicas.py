"""Two `imageci serve` processes (here: ports; in production: machines) sharing one
PostgreSQL and one object store act as one server: publish through one; read,
download, promote, follow the feed, follow a live log and sign in to the
dashboard through the other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from imageci.app import importing
from imageci.app.session import Session
from imageci.config import Settings

from conftest import busybox_rootfs
from pgkit import database
from s3kit import S3Server
from serverkit import API, _token, start_server

pytestmark = [pytest.mark.postgres, pytest.mark.root]


def _laptop_version(tmp_path: Path) -> tuple[Settings, str]:
    """A version made on a laptop (its own home), with its LXD form: NAME@SERIAL."""
    home = tmp_path / "laptop"
    settings = Settings.load(home, env={})
    settings.ensure()
    s = Session.open(settings)
    try:
        v = importing.import_(s, "replicated", str(busybox_rootfs(tmp_path / "rootfs.tar", "replicas"))).version
        return settings, f"replicated@{v.serial}"
    finally:
        s.close()


def test_two_replicas_on_one_database_and_one_bucket_act_as_one_server(postgres_url: str, s3: S3Server,
                                                                       tmp_path: Path) -> None:
    db = database(postgres_url, "replicas")
    laptop, ref = _laptop_version(tmp_path)
    a_run = start_server(tmp_path / "replica-a", db, seed=False, **s3.env("replicas"))
    a = next(a_run)
    b_run = start_server(tmp_path / "replica-b", db, seed=False, **s3.env("replicas"))
    b = next(b_run)
    try:
        for replica in (a, b):
            ready = httpx.get(f"{replica.url}/readyz").json()
            assert ready["status"] == "ready" and ready["store"] == "writable", ready
        admin = _token(a, "replica-admin", "default", "admin")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGECI_", "AWS_"))}
        env |= {"IMAGECI_HOME": str(laptop.home), "IMAGECI_TOKEN": admin, "XDG_CONFIG_HOME": str(tmp_path / "c")}
        published = subprocess.run([sys.executable, "-m", "imageci.cli", "--server", a.url, "publish", ref],
                                   capture_output=True, text=True, env=env)
        assert published.returncode == 0, published.stderr
        assert not any((a.home / "store" / "blobs").rglob("*")) if (a.home / "store" / "blobs").exists() else True
        # B never saw the upload: it reads the catalog and fetches from the bucket
        listed = b.get(f"{API}/images", admin).json()
        assert [r["name"] for r in listed] == ["replicated"]
        arts = b.get(f"{API}/images/{ref}/artifacts", admin).json()
        rootfs = next(x for x in arts if x["kind"] == "rootfs")
        part = b.get(f"{API}/images/{ref}/artifacts/{rootfs['filename']}", admin, headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
        assert part.headers["etag"] == f'"{rootfs["digest"].removeprefix("sha256:")}"'
        promoted = httpx.post(f"{b.url}{API}/images/{ref}/promote", json={"force": True, "reason": "replicas"},
                              headers={"Authorization": f"Bearer {admin}"})
        assert promoted.status_code == 200, promoted.text
        assert a.get(f"{API}/images/replicated:stable", admin).json()["version"] == ref.split("@")[1]
        feed_a = a.get("/lxd/default/stable/streams/v1/images.json", admin).json()
        feed_b = b.get("/lxd/default/stable/streams/v1/images.json", admin).json()
        assert feed_a == feed_b and "replicated" in str(feed_b)
        _live_log_through_both(a.url, b.url, admin, ref)
        _dashboard_sign_in_on_one_form_on_the_other(a.url, b.url, admin, ref)
    finally:
        for running in (b_run, a_run):
            with pytest.raises(StopIteration):
                next(running)


def _live_log_through_both(a: str, b: str, token: str, ref: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    run = httpx.post(f"{a}{API}/images/{ref}/runs", json={"tests": ["t"]}, headers=auth).json()["run"]
    chunk = {"key": "job-000001.abcd", "test": "t", "testbed": "laptop", "worker": "w", "offset": 0, "data": "one\n"}
    assert httpx.post(f"{a}{API}/runs/{run}/live", json=chunk, headers=auth).json() == {"size": 4, "accepted": True}
    again = httpx.post(f"{b}{API}/runs/{run}/live", json={**chunk, "data": "one\ntwo\n"}, headers=auth).json()
    assert again == {"size": 8, "accepted": True}  # the retry through the other replica: written once
    assert httpx.get(f"{b}{API}/runs/{run}/live/job-000001.abcd", headers=auth).text == "one\ntwo\n"
    assert httpx.get(f"{a}{API}/runs/{run}/live/job-000001.abcd?offset=4", headers=auth).text == "two\n"
    assert [x["size"] for x in httpx.get(f"{a}{API}/runs/{run}/live", headers=auth).json()] == [8]


def _dashboard_sign_in_on_one_form_on_the_other(a: str, b: str, token: str, ref: str) -> None:
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        assert browser.post(f"{a}/login", data={"token": token}).status_code == 303
        page = browser.get(f"{a}/versions/{ref}").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None, page[:2000]
        cookie = {"imageci_token": browser.cookies["imageci_token"]}
        bad = httpx.post(f"{b}/logout", data={"csrf": "0" * 64}, cookies=cookie, headers={"Origin": b})
        assert bad.status_code == 403
        form = httpx.post(f"{b}/logout", data={"csrf": csrf.group(1)}, cookies=cookie, headers={"Origin": b})
        assert form.status_code == 303, form.text  # B accepts the CSRF token A made: one key


def test_downloads_redirect_to_a_short_lived_presigned_url_when_configured(s3: S3Server, tmp_path: Path) -> None:
    import hashlib

    from serverkit import put_blob

    for server in start_server(tmp_path / "server", None, seed=False, IMAGECI_STORE_PRESIGN="60",
                               **s3.env("presigned")):
        pub = _token(server, "presign-pub", "default", "admin")
        rootfs = b"presigned bytes " * 4096
        digest = hashlib.sha256(rootfs).hexdigest()
        assert put_blob(server, pub, rootfs).status_code == 201
        body = {"name": "presigned", "digest": digest, "artifacts": [
            {"kind": "rootfs", "filename": "rootfs.tar", "digest": digest, "size": len(rootfs)}]}
        auth = {"Authorization": f"Bearer {pub}"}
        assert httpx.post(f"{server.url}{API}/versions", json=body, headers=auth).status_code == 201
        moved = httpx.get(f"{server.url}{API}/images/presigned:testing/artifacts/rootfs.tar", headers=auth)
        assert moved.status_code == 307 and moved.headers["location"].startswith(s3.endpoint)
        assert "X-Amz-Signature=" in moved.headers["location"] and "X-Amz-Expires=60" in moved.headers["location"]
        got = httpx.get(moved.headers["location"])  # the store itself answers, no token of ours
        assert got.status_code == 200 and got.content == rootfs
        assert httpx.get(f"{server.url}{API}/images/presigned:testing/artifacts/rootfs.tar").status_code == 404
