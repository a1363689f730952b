"""The name server a VM's network offers: one name, answered over TCP.

A qemu VM's user-mode network runs restricted (no packet leaves for the
outside), and in that mode it carries no UDP but DHCP, and its DHCP names
neither a router nor a DNS server: a guest cannot reach the host's resolver,
nor anything else. The testbed still gives the guest a resolver, as a cloud
does: the network configuration in the cloud-init seed
(``testbeds.cloudseed``) names ``10.0.2.100`` as the DNS server, and a
``guestfwd`` rule takes TCP connections to ``10.0.2.100:53`` to this server,
in imageci. It answers

- ``testbed.imageci.test.`` (``A``) with ``10.0.2.2``, the host's address on
  the VM's network (``.test`` is reserved for testing, RFC 6761);
- every other name with ``REFUSED``: nothing outside is resolved.

The ``dns-configured`` check resolves that name through the resolver the
guest configured (over TCP, the transport this network carries).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

NAME = "testbed.imageci.test."
ADDRESS = "10.0.2.2"
GUEST_SERVER = "10.0.2.100"  # where a VM reaches it (a guestfwd rule), as the archive proxy
MAX_MESSAGE = 4096
IDLE = 30.0  # seconds a connection may wait for its next query


def answer(query: bytes) -> bytes | None:
    """The reply to one DNS message (None: not a query we can parse)."""
    try:
        msg = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return None
    if msg.flags & dns.flags.QR:
        return None
    reply = dns.message.make_response(msg)
    reply.flags |= dns.flags.AA
    if len(msg.question) != 1:
        reply.set_rcode(dns.rcode.FORMERR)
        return reply.to_wire()
    q = msg.question[0]
    if q.name.to_text().lower() != NAME:
        reply.set_rcode(dns.rcode.REFUSED)
    elif q.rdclass == dns.rdataclass.IN and q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
        reply.answer.append(dns.rrset.from_text(NAME, 60, "IN", "A", ADDRESS))
    return reply.to_wire()


def _serve_connection(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(IDLE)
        while True:
            try:
                head = _read(conn, 2)
                if head is None:
                    return
                (length,) = struct.unpack("!H", head)
                if length > MAX_MESSAGE:
                    return
                query = _read(conn, length)
                if query is None:
                    return
                reply = answer(query)
                if reply is None:
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
            except OSError:
                return


def _read(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class GuestDns:
    """The server, on a loopback port the VMs' guestfwd relays reach."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="imageci-guest-dns", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=_serve_connection, args=(conn,), name="imageci-guest-dns-conn",
                             daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
