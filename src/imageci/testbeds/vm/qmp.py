"""A minimal QEMU Machine Protocol client (JSON lines over a unix socket)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from imageci import unixsock


class QmpError(Exception):
    pass


class Qmp:
    def __init__(self, path: Path, timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        try:
            unixsock.connect(self.sock, path)  # a deep home's path is longer than a socket address may be
        except BaseException:
            self.sock.close()
            raise
        self.file = self.sock.makefile("rw", encoding="utf-8")
        json.loads(self.file.readline())  # greeting
        self.command("qmp_capabilities")

    def command(self, name: str, **arguments: Any) -> Any:
        self.file.write(json.dumps({"execute": name, "arguments": arguments}) + "\n")
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise QmpError(f"QMP connection closed during {name}")
            msg = json.loads(line)
            if "error" in msg:
                raise QmpError(f"{name}: {msg['error'].get('desc', msg['error'])}")
            if "return" in msg:
                return msg["return"]
            # asynchronous events are skipped

    def close(self) -> None:
        try:
            self.file.close()
        finally:
            self.sock.close()
