"""The channels as LXD/Incus feeds: what `imageci serve` lists under /lxd, proved
by the consumer that reads it — Debian's LXD (`lxc remote add … --protocol
simplestreams`, `lxc image list`, `lxc launch`) over HTTPS with a test CA."""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from clikit import run_cli

from imageci.app import tokens
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.config import Settings
from imageci.formats import lxdimage
from imageci.rootpath import os_release
from imageci.store.catalog import Catalog, NewArtifact

from conftest import IMAGECI, REPO, busybox_rootfs, free_port, require_tool


@dataclass
class Feeds:
    url: str
    home: Path
    settings: Settings
    ca: Path  # the test CA's certificate (PEM)
    cert: Path  # the server's
    versions: dict[str, str]  # testing-only, stable, no-squashfs, other-namespace → NAME@SERIAL
    tokens: dict[str, str]

    def get(self, path: str, **kw: object) -> httpx.Response:
        return httpx.get(self.url + path, verify=ssl.create_default_context(cafile=self.ca), timeout=30, **kw)  # type: ignore[arg-type]


def make_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it: (CA cert, server cert, server key)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=imageci test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                                   "extendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "ext")
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")} | {"IMAGECI_HOME": str(home)}
    return run_cli(args, env, timeout=300)


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feeds]:
    """A home with busybox images imported (so they have their LXD form): `tiny` with one stable and one
    testing version; `bare`, a version without a squashfs; `elsewhere` in namespace `apps`. Served
    over HTTPS by `imageci serve --tls-cert/--tls-key`."""
    base = tmp_path_factory.mktemp("feeds")
    home = base / "home"
    for marker, name in (("one", "tiny"), ("two", "tiny"), ("apps", "elsewhere")):
        done = _cli(home, "import", name, str(busybox_rootfs(base / f"{marker}.tar", marker)))
        assert done.returncode == 0, done.stdout + done.stderr
    with tarfile.open(busybox_rootfs(base / "noinit-src.tar", "noinit")) as src, \
            tarfile.open(base / "noinit.tar", "w") as dest:  # `lxc launch` could not start it: no /sbin/init
        for member in src:
            if member.name != "sbin/init":
                dest.addfile(member, src.extractfile(member) if member.isfile() else None)
    done = _cli(home, "import", "noinit", str(base / "noinit.tar"))
    assert done.returncode == 0, done.stdout + done.stderr
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    cat = Catalog.open(settings.db_url)
    one, two = cat.versions("tiny")
    cat.register_version("bare", "e" * 64, [NewArtifact("rootfs", "rootfs.tar", "e" * 64, 10)], input_hash=None,
                         definition=None, build_info={"lxd": {"os": "Debian", "release": "x", "variant": "bare",
                                                              "fingerprint": "f" * 64}})
    cat.set_product("elsewhere", namespace="apps", public=False)
    cat.close()
    done = _cli(home, "promote", f"tiny@{one.serial}", "--force", "--reason", "feed test")
    assert done.returncode == 0, done.stdout + done.stderr
    s = Session.open(settings)
    made = {name: tokens.create(s, name, ns, scope, channel=channel, by=LOCAL).secret
            for name, ns, scope, channel in (("reader", "default", "read", None), ("apps", "apps", "read", None),
                                             ("follower", "default", "read", "stable"))}
    s.close()
    ca, cert, key = make_test_ca(base / "tls")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")} | {"IMAGECI_HOME": str(home)}
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([*IMAGECI, "serve", "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert),
                             "--tls-key", str(key)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", verify=ssl.create_default_context(cafile=ca), timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (home / "server.log").read_text()
        assert time.monotonic() < deadline, "the server did not answer within 60 s"
        time.sleep(0.2)
    try:
        yield Feeds(url, home, settings, ca, cert, {"stable": f"tiny@{one.serial}", "testing": f"tiny@{two.serial}"},
                    made)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()


def _products(feeds: Feeds, base: str, **kw: object) -> dict[str, object]:
    r = feeds.get(f"{base}/streams/v1/images.json", **kw)
    assert r.status_code == 200, r.text
    return r.json()["products"]  # type: ignore[no-any-return]


def test_the_feed_lists_each_channel_in_the_simplestreams_format(feeds: Feeds) -> None:
    reader = feeds.tokens["reader"]
    index = feeds.get(f"/lxd/default/testing/{reader}/streams/v1/index.json").json()
    assert index["format"] == "index:1.0"
    entry = index["index"]["images"]
    assert entry["datatype"] == "image-downloads" and entry["path"] == "streams/v1/images.json"
    assert entry["format"] == "products:1.0" and entry["products"] == ["busybox:1.35:amd64:tiny"]
    products = _products(feeds, f"/lxd/default/testing/{reader}")
    assert list(products) == ["busybox:1.35:amd64:tiny"]  # `bare` (no squashfs) is absent, not half-listed
    # and `noinit`, which has its LXD form but no /sbin/init: `imageci images` says why it is not listed
    listed = {r["name"]: r["lxd_feed"] for r in json.loads(_cli(feeds.home, "images", "--json").stdout)}
    assert listed["noinit"] == "not listed: no /sbin/init (lxc launch cannot start it)"
    assert listed["bare"] == "not listed: no LXD form" and listed["tiny"] == "listed"
    assert "not listed: no /sbin/init" in _cli(feeds.home, "images", "noinit").stdout
    tiny = products["busybox:1.35:amd64:tiny"]
    assert isinstance(tiny, dict)
    assert {k: tiny[k] for k in ("aliases", "os", "release", "release_title", "arch", "variant")} == {
        "aliases": "tiny", "os": "Busybox", "release": "1.35", "release_title": "1.35", "arch": "amd64",
        "variant": "tiny"}
    assert tiny["requirements"] == {} and tiny["lxd_requirements"] == {}
    serials = list(tiny["versions"])
    assert serials == [feeds.versions["stable"].split("@")[1], feeds.versions["testing"].split("@")[1]]
    assert sorted(serials) == serials and all(s[:8].isdigit() for s in serials)
    for serial, version in tiny["versions"].items():
        items = version["items"]
        assert set(items) == {"lxd.tar.xz", "incus.tar.xz", "root.squashfs"}
        assert items["root.squashfs"]["ftype"] == "squashfs"
        assert items["lxd.tar.xz"]["ftype"] == "lxd.tar.xz" and items["incus.tar.xz"]["ftype"] == "incus.tar.xz"
        blobs = {}
        for name, item in items.items():
            assert item["path"] == f"images/tiny/{serial}/{name}"
            body = feeds.get(f"/lxd/default/testing/{reader}/{item['path']}").content
            assert hashlib.sha256(body).hexdigest() == item["sha256"] and len(body) == item["size"]
            blobs[name] = body
        combined = hashlib.sha256(blobs["lxd.tar.xz"] + blobs["root.squashfs"]).hexdigest()
        assert items["lxd.tar.xz"]["combined_squashfs_sha256"] == combined
        assert items["incus.tar.xz"]["combined_squashfs_sha256"] == combined
        with tarfile.open(fileobj=io.BytesIO(lzma.decompress(blobs["lxd.tar.xz"]))) as tar:
            assert tar.getnames() == ["metadata.yaml"]
            meta = yaml.safe_load(tar.extractfile("metadata.yaml").read())  # type: ignore[union-attr]
        assert meta["architecture"] == "x86_64" and meta["properties"]["os"] == "Busybox"
        assert meta["creation_date"] == 1760000000  # the newest file of the imported tree
    stable = _products(feeds, f"/lxd/default/stable/{reader}")["busybox:1.35:amd64:tiny"]
    assert isinstance(stable, dict) and list(stable["versions"]) == [serials[0]]
    # the same answer with the token in a header (Bearer, or Basic as URL credentials send it)
    assert _products(feeds, "/lxd/default/testing", headers={"Authorization": f"Bearer {reader}"}) == products
    assert _products(feeds, "/lxd/default/testing", auth=("lxd", reader)) == products
    assert reader not in (feeds.home / "server.log").read_text()  # the URL's credential is never logged


def test_a_feed_shows_only_what_its_caller_may_see(feeds: Feeds) -> None:
    follower, apps = feeds.tokens["follower"], feeds.tokens["apps"]
    # a follower (read, bound to stable) has the stable feed and no other
    products = _products(feeds, f"/lxd/default/stable/{follower}")
    assert list(products["busybox:1.35:amd64:tiny"]["versions"]) == [  # type: ignore[index]
        feeds.versions["stable"].split("@")[1]]
    assert feeds.get(f"/lxd/default/testing/{follower}/streams/v1/images.json").status_code == 404
    testing_serial = feeds.versions["testing"].split("@")[1]
    squash = f"images/tiny/{testing_serial}/root.squashfs"
    assert feeds.get(f"/lxd/default/testing/{feeds.tokens['reader']}/{squash}").status_code == 200
    assert feeds.get(f"/lxd/default/stable/{follower}/{squash}").status_code == 404  # not on its channel
    # another namespace's token, anonymous, an unknown channel: 404 with a message, as for any unknown thing
    for path in (f"/lxd/default/testing/{apps}/streams/v1/index.json", "/lxd/default/testing/streams/v1/index.json",
                 f"/lxd/default/beta/{feeds.tokens['reader']}/streams/v1/index.json",
                 f"/lxd/apps/testing/{feeds.tokens['reader']}/{squash}"):
        r = feeds.get(path)
        assert r.status_code == 404 and "no " in r.json()["error"], (path, r.text)
    assert list(_products(feeds, f"/lxd/apps/testing/{apps}")) == ["busybox:1.35:amd64:elsewhere"]
    # a bad or revoked token is refused, not treated as anonymous
    assert feeds.get("/lxd/default/testing/ici_" + "x" * 43 + "/streams/v1/index.json").status_code == 401
    # a path that is not a file of the feed, or not a feed at all
    assert feeds.get(f"/lxd/default/testing/{apps}/images/../../api/v1/images").status_code == 404
    assert feeds.get(f"/lxd/default/testing/{feeds.tokens['reader']}/images/tiny/{testing_serial}/rootfs.tar"
                     ).status_code == 404  # the rootfs is an artifact, not a feed file


def test_lxd_forms_are_reproducible(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    (tree / "usr").symlink_to("/elsewhere")
    image = lxdimage.LxdImage(os="Debian", release="bookworm", variant="x", architecture="arm64", description="d",
                              created=1700000000)
    assert lxdimage.metadata_tarball(image) == lxdimage.metadata_tarball(image)
    first, second = tmp_path / "a.squashfs", tmp_path / "b.squashfs"
    lxdimage.make_squashfs(tree, first, 1700000000)
    time.sleep(1.1)  # a clock that leaked into the image would show now
    lxdimage.make_squashfs(tree, second, 1700000000)
    assert first.read_bytes() == second.read_bytes()
    assert os_release(tree) == {"ID": "debian", "VERSION_CODENAME": "bookworm"}
    (tree / "etc" / "os-release").unlink()
    (tree / "etc" / "os-release").symlink_to("../../../../../etc/hostname")  # out of the tree: not read
    assert os_release(tree) == {}
    with tarfile.open(fileobj=io.BytesIO(lzma.decompress(lxdimage.metadata_tarball(image)))) as tar:
        assert yaml.safe_load(tar.extractfile("metadata.yaml").read())["architecture"] == "aarch64"  # type: ignore[union-attr]


def _lxc(conf: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["lxc", *args], env={**os.environ, "LXD_CONF": str(conf)}, capture_output=True,
                          text=True, timeout=300)
    assert not check or done.returncode == 0, f"lxc {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def test_lxd_follows_the_feed_and_launches_what_was_published(feeds: Feeds, tmp_path: Path) -> None:
    require_tool(shutil.which("lxc") is not None, "lxd")
    up = subprocess.run([str(REPO / "scripts" / "lxd-up.sh")], capture_output=True, text=True)
    assert up.returncode == 0, up.stdout + up.stderr
    conf = tmp_path / "lxc"  # this test's client configuration, not the host user's
    reader = feeds.tokens["reader"]
    before = {i["fingerprint"] for i in json.loads(_lxc(conf, "image", "list", "local:", "--format", "json").stdout)}
    remotes = {"testing": f"imageci-testing-{secrets.token_hex(3)}", "stable": f"imageci-stable-{secrets.token_hex(3)}"}
    for channel, remote in remotes.items():
        _lxc(conf, "remote", "add", remote, f"{feeds.url}/lxd/default/{channel}/{reader}", "--protocol",
             "simplestreams", "--accept-certificate")
        # LXD pins a simplestreams remote's certificate from servercerts/ (its CA is not the system's)
        (conf / "servercerts").mkdir(exist_ok=True)
        shutil.copy(feeds.cert, conf / "servercerts" / f"{remote}.crt")
    listed = {c: json.loads(_lxc(conf, "image", "list", f"{r}:", "--format", "json").stdout)
              for c, r in remotes.items()}
    published = _products(feeds, f"/lxd/default/testing/{reader}")["busybox:1.35:amd64:tiny"]
    fingerprints = {serial: v["items"]["lxd.tar.xz"]["combined_squashfs_sha256"]
                    for serial, v in published["versions"].items()}  # type: ignore[index]
    stable_serial, testing_serial = (feeds.versions[c].split("@")[1] for c in ("stable", "testing"))
    assert {i["fingerprint"] for i in listed["testing"]} == set(fingerprints.values())
    assert {i["fingerprint"] for i in listed["stable"]} == {fingerprints[stable_serial]}
    assert {i["properties"]["serial"] for i in listed["testing"]} == {stable_serial, testing_serial}
    names = []
    try:
        for channel, serial in (("testing", testing_serial), ("stable", stable_serial)):
            name = f"imageci-feed-{channel}-{secrets.token_hex(3)}"
            _lxc(conf, "launch", f"{remotes[channel]}:tiny", name)
            names.append(name)
            info = json.loads(_lxc(conf, "list", name, "--format", "json").stdout)[0]
            assert info["status"] == "Running"
            assert info["config"]["volatile.base_image"] == fingerprints[serial]  # LXD's fingerprint = ours
            marker = _lxc(conf, "exec", name, "--", "cat", "/etc/imageci-marker").stdout
            assert marker == {"testing": "two", "stable": "one"}[channel]
    finally:
        for name in names:
            _lxc(conf, "delete", "--force", name, check=False)
        for fp in set(fingerprints.values()) - before:
            _lxc(conf, "image", "delete", fp, check=False)
    left = {i["fingerprint"] for i in json.loads(_lxc(conf, "image", "list", "local:", "--format", "json").stdout)}
    assert left.isdisjoint(set(fingerprints.values()) - before)  # what this test pulled was removed, all of it
    assert left >= before - set(fingerprints.values())  # and nothing that was there before (other users' images)


def test_serve_refuses_half_a_tls_pair(tmp_path: Path) -> None:
    done = _cli(tmp_path / "home", "serve", "--listen", "127.0.0.1:1", "--tls-cert", str(tmp_path / "x"))
    assert done.returncode == 2 and "--tls-cert and --tls-key go together" in done.stderr
    (tmp_path / "bad.pem").write_text("not a certificate")
    done = _cli(tmp_path / "home", "serve", "--listen", f"127.0.0.1:{free_port()}", "--tls-cert",
                str(tmp_path / "bad.pem"), "--tls-key", str(tmp_path / "bad.pem"))
    assert done.returncode == 2 and "cannot use" in done.stderr and "Traceback" not in done.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
