"""Publishing to a server: blobs uploaded streamed and checked, then committed in one step; disks
checked before anything boots them; artifacts downloaded with Range and ETag."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from imageci.app.session import Session
from imageci.config import Settings
from imageci.store.catalog import Catalog, NewArtifact

from serverkit import API, Server, _token, leftovers, put_blob
from test_diskimport import corrupt


def test_publishing_uploads_checked_blobs_then_commits_in_one_step(server: Server) -> None:
    pub = _token(server, "pub-apps", "apps", "publish")
    reader = _token(server, "pub-reader", "apps", "read")
    rootfs, log = b"rootfs bytes " * 1000, b"build log\n"
    auth = {"Authorization": f"Bearer {pub}"}
    assert put_blob(server, reader, rootfs).status_code == 403  # read may not upload
    wrong = put_blob(server, pub, rootfs, digest="0" * 64)
    assert wrong.status_code == 400 and "sha256 is" in wrong.json()["error"]
    assert put_blob(server, pub, b"x" * (2 << 20)).status_code == 413  # past IMAGECI_MAX_UPLOAD (1M)
    chunked = httpx.put(f"{server.url}{API}/blobs/sha256:{hashlib.sha256(b'y' * (2 << 20)).hexdigest()}",
                        content=iter([b"y" * (1 << 19)] * 4), headers=auth, timeout=30)  # no Content-Length
    assert chunked.status_code == 413
    # a truncated upload: the client says 5000 bytes, sends 100 and goes away
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as raw:
        raw.sendall(f"PUT {API}/blobs/sha256:{'1' * 64} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {pub}\r\n"
                    "Content-Length: 5000\r\n\r\n".encode() + b"z" * 100)
    time.sleep(1)
    assert leftovers(server) == [] and not server.settings.store_dir.joinpath("blobs", "sha256", "11").exists()
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
        stored = put_blob(server, pub, blob)
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
    assert leftovers(server) == []


def test_uploads_never_committed_are_garbage_that_gc_removes_after_its_grace(server: Server) -> None:
    pub = _token(server, "pub-gc", "apps", "publish")
    auth = {"Authorization": f"Bearer {pub}"}
    blobs = {what: what.encode() * 500 for what in ("orphan", "young", "headed", "kept")}
    digests = {what: hashlib.sha256(data).hexdigest() for what, data in blobs.items()}
    for data in blobs.values():
        assert put_blob(server, pub, data).status_code == 201
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
        assert put_blob(server, pub, blob).status_code == 201

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
