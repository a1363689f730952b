"""Where imageci itself may connect when it fetches a repository by URL (a consumer's ``--git``).

A token holder chooses that URL, and the server connects: without a rule it would reach the server's
own loopback services, the cloud's metadata address and private networks, and its errors would tell
a caller which hosts and ports answer. The rule:

- Only ``https``, ``http``, ``git`` and ``ssh`` URLs (and ``user@host:path``, ssh's short form).
- ``IMAGECI_GIT_HOSTS`` unset: any host whose every address is public (global unicast); loopback,
  link-local, private, shared, reserved and multicast addresses are refused, checked after resolving
  the name and again on every HTTP redirect.
- ``IMAGECI_GIT_HOSTS=a.example,b.example:8443``: only those hosts (a ``:PORT`` pins the port too), at
  whatever address they resolve to: listing an internal host is the operator vouching for it.
- The address checked is the address connected to: HTTP(S) connections go through a network backend
  that checks each one, git is handed that address (``http.curloptResolve``, ssh's ``HostName``, a git://
  URL by address), and git never follows a redirect itself.
- Any failure to fetch is one message to the caller; the reason goes to the log.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpcore

from imageci.errors import UsageError

log = logging.getLogger("imageci.egress")
SCHEMES = ("https", "http", "git", "ssh")
DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}
MAX_REDIRECTS = 5
ADVERTISEMENT = "/info/refs?service=git-upload-pack"


class Refused(Exception):
    """Why a destination may not be reached (for the log, never for the caller)."""


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class EgressPolicy:
    hosts: tuple[str, ...] = ()  # IMAGECI_GIT_HOSTS; empty: any public host

    @classmethod
    def parse(cls, text: str | None) -> EgressPolicy:
        return cls(tuple(h.strip().lower() for h in (text or "").split(",") if h.strip()))

    def _listed(self, host: str, port: int) -> bool:
        return host in self.hosts or f"{host}:{port}" in self.hosts or f"[{host}]:{port}" in self.hosts

    def address(self, host: str, port: int) -> str:
        """The address to connect to for ``host:port``, or Refused."""
        host = host.lower().strip("[]")
        if self.hosts and not self._listed(host, port):
            raise Refused(f"{host}:{port} is not in IMAGECI_GIT_HOSTS")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Refused(f"{host}: cannot resolve ({exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise Refused(f"{host}: no address")
        if not self.hosts:
            private = [str(a) for a in addresses if not _public(a)]
            if private:
                raise Refused(f"{host} resolves to {', '.join(private)}: not a public address "
                              "(list the host in IMAGECI_GIT_HOSTS to allow it)")
        return str(addresses[0])


@dataclass
class Destination:
    """A URL git may fetch, with the checked address it must use and the git/ssh options that pin it."""

    url: str
    config: list[str] = field(default_factory=list)  # git -c options
    env: dict[str, str] = field(default_factory=dict)
    shallow: bool = True  # git's dumb HTTP (a plain file server) cannot fetch shallow


def _split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL or of ssh's ``user@host:path``, or Refused."""
    if "://" not in url and ":" in url.split("/", 1)[0]:  # user@host:path
        host = url.split(":", 1)[0].rsplit("@", 1)[-1]
        return "ssh", host, 22
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"not a URL: {exc}") from None
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise Refused(f"scheme {parts.scheme!r} or host missing")
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _http_destination(policy: EgressPolicy, url: str) -> Destination:
    """Follow the repository's redirects, each hop checked, and pin git to the last hop's address."""
    backend = _CheckedBackend(policy)
    base = url.rstrip("/")
    with httpcore.ConnectionPool(network_backend=backend, retries=0) as pool:
        for _ in range(MAX_REDIRECTS + 1):
            response = pool.request("GET", base + ADVERTISEMENT, extensions={"timeout": {"connect": 10, "read": 30}})
            headers = {k.lower(): v for k, v in response.headers}
            location = headers.get(b"location")
            if response.status not in (301, 302, 303, 307, 308) or location is None:
                break
            target = urljoin(base + ADVERTISEMENT, location.decode("latin-1"))
            if not target.endswith(ADVERTISEMENT) or urlsplit(target).scheme not in ("http", "https"):
                raise Refused(f"redirected to {target}, not a git repository's advertisement")
            base = target[: -len(ADVERTISEMENT)]
        else:
            raise Refused(f"more than {MAX_REDIRECTS} redirects")
    if response.status != 200:
        raise Refused(f"HTTP {response.status} for {base}{ADVERTISEMENT}")
    scheme, host, port = _split(base)
    smart = headers.get(b"content-type", b"").startswith(b"application/x-git-upload-pack-advertisement")
    return Destination(base, ["-c", f"http.curloptResolve={host}:{port}:{backend.resolved[(host, port)]}",
                              "-c", "http.followRedirects=false"], shallow=smart)


class _CheckedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, connecting only to checked addresses (and remembering them)."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.SyncBackend()
        self.resolved: dict[tuple[str, int], str] = {}

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        address = self.policy.address(host, port)
        self.resolved[(host.lower(), port)] = address
        return self.inner.connect_tcp(address, port, timeout, local_address, socket_options)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        raise Refused("no unix sockets")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


def destination(policy: EgressPolicy, url: str) -> Destination:
    """Where git may fetch ``url`` from, pinned to a checked address; Refused (for the log) if nowhere."""
    scheme, host, port = _split(url)
    if scheme in ("http", "https"):
        return _http_destination(policy, url)
    address = policy.address(host, port)
    if scheme == "git":
        parts = urlsplit(url)
        return Destination(urlunsplit(parts._replace(netloc=f"{_bracket(address)}:{port}")))
    ssh = f"ssh -o BatchMode=yes -o HostName={address} -o HostKeyAlias={host} -o Port={port}"
    return Destination(url, env={"GIT_SSH_COMMAND": ssh, "GIT_SSH_VARIANT": "ssh"})


def fetch_refused(url: str, why: Exception) -> UsageError:
    """The one answer a caller gets for any failure to fetch ``url``; the reason is logged."""
    log.warning("fetching %s: %s", url, why)
    return UsageError(f"{url}: the repository could not be fetched (it is unreachable, not a git repository, "
                      "or not allowed from here; the reason is in the log)")
