"""The image's apt archive, and nothing else: network access for DEP-8 tests.

autopkgtest's contract is that a test may use the testbed's configured apt
archive (``apt-get download``, ``apt-get source``); only the internet beyond
it needs the ``needs-internet`` restriction. A testbed that offers
``archive`` gives a test exactly that: its network namespace has only
loopback, where an HTTP proxy listens on ``127.0.0.1:3142``
(``Acquire::http::Proxy`` is set in the testbed). The proxy runs in imageci,
outside the testbed, and forwards only:

- ``GET`` and ``HEAD`` requests for ``http://`` URLs of the hosts the image's
  own apt sources name (``/etc/apt/sources.list`` and ``sources.list.d``),
  one request per connection, with the ``Host`` header set from the URL (so a
  request cannot be redirected to another site behind the same CDN);
- ``CONNECT`` to port 443 of those hosts when a source uses ``https://``.

Anything else is refused with ``403`` and a reason; no other address is
reachable from inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import selectors
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from imageci.errors import TestbedError
from imageci.libc import LIBC

PORT = 3142
GUEST_ADDRESS = "10.0.2.100"  # where a qemu VM reaches the proxy (a guestfwd rule)
APT_CONF = "/etc/apt/apt.conf.d/00imageci-archive-proxy"


def apt_conf(host: str = "127.0.0.1") -> str:
    return f'Acquire::http::Proxy "http://{host}:{PORT}/";\nAcquire::https::Proxy "http://{host}:{PORT}/";\n'


APT_CONF_TEXT = apt_conf()
CLONE_NEWNET = 0x40000000
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40
MAX_HEADER = 64 << 10
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host"}


def archive_hosts(root: Path) -> frozenset[tuple[str, str, int]]:
    """(scheme, host, port) of every http(s) archive the image's apt sources name."""
    texts = []
    for path in [root / "etc/apt/sources.list", *sorted((root / "etc/apt/sources.list.d").glob("*"))]:
        if path.is_file() and not path.is_symlink() and path.suffix in ("", ".list", ".sources"):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                texts.append(path.read_text())
    found = set()
    for text in texts:
        for url in re.findall(r"\b(https?://[^\s\]]+)", text):
            parts = urlsplit(url)
            if parts.hostname:
                default = 443 if parts.scheme == "https" else 80
                found.add((parts.scheme, parts.hostname.lower(), parts.port or default))
    return frozenset(found)


def _in_thread(fn: object) -> object:
    """Run ``fn`` in a thread of its own: namespace changes stay in that thread."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 — handed to the caller
            box["error"] = exc

    t = threading.Thread(target=run, name="imageci-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", PORT))
    sock.listen(64)
    return sock


def host_listener() -> socket.socket:
    """A listening socket on an ephemeral 127.0.0.1 port of the host (for qemu's guestfwd)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def new_namespace() -> tuple[int, socket.socket]:
    """A new network namespace with loopback up and the proxy's socket bound in it:
    (an fd that keeps the namespace, the listening socket)."""
    def make() -> tuple[int, socket.socket]:
        if LIBC.unshare(CLONE_NEWNET) != 0:
            raise TestbedError(f"cannot create a network namespace: {os.strerror(ctypes.get_errno())}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC), _listen()

    return _in_thread(make)  # type: ignore[return-value]


def listen_in(pid: int) -> socket.socket:
    """The proxy's socket bound inside the network namespace of process ``pid`` (a container)."""
    def make() -> socket.socket:
        fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            if LIBC.setns(fd, CLONE_NEWNET) != 0:
                raise TestbedError(f"cannot enter the container's network: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)
        return _listen()

    return _in_thread(make)  # type: ignore[return-value]


@dataclass(frozen=True)
class Refusal:
    status: str
    why: str


def _refuse(conn: socket.socket, r: Refusal) -> None:
    body = f"imageci: {r.why}\n".encode()
    with contextlib.suppress(OSError):
        conn.sendall(f"HTTP/1.1 {r.status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)


class ArchiveProxy:
    """One per process: serves every testbed's listening socket."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self.requests = 0
        self.refused = 0
        threading.Thread(target=self._loop, name="imageci-archive-proxy", daemon=True).start()

    def serve(self, sock: socket.socket, allowed: frozenset[tuple[str, str, int]]) -> None:
        sock.setblocking(False)
        with self._lock:
            self._sel.register(sock, selectors.EVENT_READ, allowed)
        os.write(self._wake_w, b"x")

    def stop(self, sock: socket.socket) -> None:
        with self._lock, contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)
        sock.close()

    def _loop(self) -> None:
        while True:
            for key, _ in self._sel.select():
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    continue
                try:
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                conn.setblocking(True)
                threading.Thread(target=self._handle, args=(conn, key.data), name="imageci-archive-conn",
                                 daemon=True).start()

    def _handle(self, conn: socket.socket, allowed: frozenset[tuple[str, str, int]]) -> None:
        with conn:
            conn.settimeout(60)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < MAX_HEADER:
                    chunk = conn.recv(8192)
                    if not chunk:
                        return
                    head += chunk
            except OSError:
                return
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3:
                return _refuse(conn, Refusal("400 Bad Request", "not an HTTP request"))
            method, target, _version = parts
            plan = self._plan(method, target, lines[1:], allowed)
            if isinstance(plan, Refusal):
                self.refused += 1
                return _refuse(conn, plan)
            host, port, request = plan
            try:
                upstream = socket.create_connection((host, port), timeout=30)
            except OSError as exc:
                return _refuse(conn, Refusal("502 Bad Gateway", f"cannot reach {host}:{port}: {exc}"))
            self.requests += 1
            with upstream:
                if request is None:  # CONNECT: a tunnel to the archive's TLS port
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    _relay_both(conn, upstream)
                else:
                    upstream.sendall(request)
                    _relay(upstream, conn)

    @staticmethod
    def _plan(method: str, target: str, headers: list[str], allowed: frozenset[tuple[str, str, int]]
              ) -> Refusal | tuple[str, int, bytes | None]:
        hosts = ", ".join(sorted({h for _, h, _ in allowed})) or "none"
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            tunnel_port = int(port_text) if port_text.isdigit() else 0
            if ("https", host.lower(), tunnel_port) in allowed:
                return host, tunnel_port, None
            return Refusal("403 Forbidden", f"only the image's apt archive is reachable ({hosts}), not {target}; "
                           "a test that needs more declares needs-internet")
        if method not in ("GET", "HEAD"):
            return Refusal("405 Method Not Allowed", f"{method} is not allowed: the archive is read-only")
        url = urlsplit(target)
        port = url.port or 80
        if url.scheme != "http" or not url.hostname or ("http", url.hostname.lower(), port) not in allowed:
            return Refusal("403 Forbidden", f"only the image's apt archive is reachable ({hosts}), not {target}; "
                           "a test that needs more declares needs-internet")
        path = url.path or "/"
        if url.query:
            path += f"?{url.query}"
        kept = [h for h in headers if h and h.split(":", 1)[0].strip().lower() not in HOP_BY_HOP]
        host_header = url.hostname if port == 80 else f"{url.hostname}:{port}"
        request = "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {host_header}", *kept, "Connection: close",
                               "", ""])
        return url.hostname, port, request.encode("latin-1")


def _relay(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        src.settimeout(300)
        while data := src.recv(1 << 16):
            dst.sendall(data)


def _relay_both(a: socket.socket, b: socket.socket) -> None:
    t = threading.Thread(target=_relay, args=(b, a), daemon=True)
    t.start()
    _relay(a, b)
    with contextlib.suppress(OSError):
        b.shutdown(socket.SHUT_WR)
    t.join(timeout=300)


_proxy: ArchiveProxy | None = None
_proxy_lock = threading.Lock()


def proxy() -> ArchiveProxy:
    global _proxy
    with _proxy_lock:
        if _proxy is None:
            _proxy = ArchiveProxy()
        return _proxy
