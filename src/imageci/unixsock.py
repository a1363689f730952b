"""Unix sockets at paths of any length.

A socket's address holds at most 107 bytes, and a home deep in a file system (a user's home with a
long name, a test's temporary directory) puts its sockets further down than that. Both ends reach
the socket through a descriptor of its directory: ``/proc/self/fd/N/NAME`` is short whatever the
directory's path, and the kernel resolves it to the same file.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _via_directory(sock: socket.socket, path: Path, op: str) -> None:
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        getattr(sock, op)(f"/proc/self/fd/{directory}/{path.name}")
    finally:
        os.close(directory)


def connect(sock: socket.socket, path: Path) -> None:
    """``sock.connect(path)`` for a path of any length."""
    _via_directory(sock, path, "connect")


def bind(sock: socket.socket, path: Path) -> None:
    """``sock.bind(path)`` for a path of any length."""
    _via_directory(sock, path, "bind")
