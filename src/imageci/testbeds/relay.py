"""Connects qemu's ``guestfwd`` to the archive proxy: stdin/stdout ↔ 127.0.0.1:PORT.

qemu starts one of these per connection a VM makes to the proxy address
(``guestfwd=...-cmd:python3 -I -S relay.py PORT``). Standard library only.
"""

import os
import socket
import sys
import threading


def main() -> None:
    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
    sock.settimeout(None)

    def upstream() -> None:
        while data := os.read(0, 65536):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    threading.Thread(target=upstream, daemon=True).start()
    while data := sock.recv(65536):
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]


if __name__ == "__main__":
    main()
