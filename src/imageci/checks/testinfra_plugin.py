"""The pytest plugin side of imageci's testinfra support (``-p imageci.checks.testinfra_plugin``).

It adds an ``imageci://`` connection to testinfra whose commands go over a
Unix socket (``$IMAGECI_EXEC_SOCKET``) to the imageci process that holds the
testbed, which runs them with the testbed protocol's ``exec``. So one
testinfra module runs unchanged on the sandbox, a podman container, a VM or
an SSH host. This module is imported inside the pytest process only.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path
from typing import Any

import testinfra.backend
from testinfra.backend import base

from imageci import unixsock
from imageci.definitions.testinfra import CONNECTION, SOCKET_ENV, read_message


class ImageciBackend(base.BaseBackend):  # type: ignore[misc]  # testinfra is untyped
    NAME = CONNECTION

    def __init__(self, hostname: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(hostname, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        path = os.environ.get(SOCKET_ENV)
        if not path:
            raise RuntimeError(f"imageci:// hosts work only under imageci (${SOCKET_ENV} is not set)")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            unixsock.connect(sock, Path(path))  # any length of path
            sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            data = read_message(sock)
        if not data:
            raise RuntimeError("the imageci exec bridge closed the connection")
        reply = json.loads(data)
        if "error" in reply:
            raise RuntimeError(f"testbed: {reply['error']}")
        return self.result(reply["rc"], self.encode(cmd), base64.b64decode(reply["stdout"]),
                           base64.b64decode(reply["stderr"]))


testinfra.backend.BACKENDS[CONNECTION] = f"{__name__}.ImageciBackend"
