"""The LXD testbed's run feed: the images a run tests on LXD, served to the
LXD daemon as a simplestreams feed over HTTPS on 127.0.0.1, written by the
same writer as every channel's feed (``build.simplestreams``). The daemon pulls
an image from it by fingerprint, as a production host pulls from a channel,
and checks each file's sha256 and the fingerprint itself.

The feed lives for one run: a throwaway self-signed certificate (handed to
LXD with each request, which pins it), a random path prefix, only the images
added to it, GET and HEAD only. Its directory is under the home's tmp, named
for the owning process, so gc removes what a killed run left.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import ssl
import subprocess
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from imageci.errors import HostSetupError, TestbedError
from imageci.formats import simplestreams
from imageci.formats.simplestreams import Feed, FeedProduct, FeedVersion, product_key, version_items
from imageci.testbeds.base import ImageHandle, LxdForm


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (key, cert), valid for two days."""
    if shutil.which("openssl") is None:
        raise HostSetupError("openssl is not installed: run scripts/host-setup.sh (the lxd testbed's feed needs it)")
    key, cert = directory / "feed.key", directory / "feed.crt"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=imageci run feed",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TestbedError(f"could not make the run feed's certificate: {done.stderr.strip()[-300:]}")
    return key, cert


class RunFeed:
    """One run's feed. ``url`` is its base URL, ``certificate`` the PEM LXD pins."""

    def __init__(self, tmp: Path, owner: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"lxdfeed-{owner}-"))
        self._images: dict[str, tuple[str, str, LxdForm]] = {}  # fingerprint → (name, architecture, form)
        self._lock = threading.Lock()
        try:
            key, cert = _certificate(self.dir)
            self.certificate = cert.read_text()
            prefix = secrets.token_urlsafe(12)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, f"/{prefix}/"))
            self._server.daemon_threads = True
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}/{prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="lxd-run-feed", daemon=True)
        self._thread.start()

    def add(self, image: ImageHandle) -> str:
        """List ``image`` (which has an LXD form); its fingerprint."""
        assert image.lxd is not None
        with self._lock:
            self._images[image.lxd.fingerprint] = (image.name, image.architecture, image.lxd)
        return image.lxd.fingerprint

    def feed(self) -> Feed:
        with self._lock:
            images = list(self._images.values())
        products: dict[str, FeedProduct] = {}
        for name, arch, form in images:
            key = product_key(form.os, form.release, arch, form.variant)
            product = products.setdefault(key, FeedProduct(
                key=key, name=name, os=form.os, release=form.release, arch=arch, variant=form.variant,
                aliases=[name], versions=[]))
            items = version_items(name, form.serial, ((f.kind, f.filename, f.sha256, f.size) for f in form.files),
                                  form.fingerprint)
            product.versions.append(FeedVersion(serial=form.serial, image=f"{name}@{form.serial}", state="testing",
                                                items=items))
        for p in products.values():
            p.versions.sort(key=lambda v: v.serial)
        return Feed(namespace="run", channel="testing", updated=None,
                    products=sorted(products.values(), key=lambda p: p.key))

    def file(self, path: str) -> Path | None:
        """The blob behind ``images/NAME/SERIAL/FILE``, if the feed lists it."""
        with self._lock:
            images = list(self._images.values())
        for name, _arch, form in images:
            for f in form.files:
                if path == f"images/{name}/{form.serial}/{f.filename}":
                    return f.path
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _handler(feed: RunFeed, prefix: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            return  # quiet: the run's own log says what LXD did

        def _send(self, body: bytes | Path | None, content_type: str = "application/octet-stream") -> None:
            if body is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            size = body.stat().st_size if isinstance(body, Path) else len(body)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return
            if isinstance(body, Path):
                with body.open("rb") as fh, contextlib.suppress(ConnectionError):
                    shutil.copyfileobj(fh, self.wfile, 1 << 20)
            else:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if not path.startswith(prefix):
                self._send(None)
                return
            rel = path.removeprefix(prefix)
            if rel in (simplestreams.INDEX, simplestreams.PRODUCTS):
                doc = simplestreams.index(feed.feed()) if rel == simplestreams.INDEX else simplestreams.images(
                    feed.feed())
                self._send(json.dumps(doc).encode(), "application/json")
                return
            self._send(feed.file(rel))

        do_HEAD = do_GET  # noqa: N815

    return Handler
