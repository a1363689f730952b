"""pytest-testinfra modules: the test functions a module holds.

A module is collected by pytest itself (with the ``imageci://`` connection
from ``checks.testinfra_plugin``), so parametrized tests and the module's
``conftest.py`` work as they do under ``pytest --hosts``. A syntax error is a
file:line error; a module pytest cannot collect is an error with pytest's
own message.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from imageci.errors import SourceError

CONNECTION = "imageci"
HOST_PARAM = f"{CONNECTION}://testbed"
PLUGIN = "imageci.checks.testinfra_plugin"
SOCKET_ENV = "IMAGECI_EXEC_SOCKET"  # where the plugin sends the host fixture's commands


def read_message(sock: socket.socket) -> bytes:
    """One newline-terminated message of the exec bridge (both ends use it); b"" if the peer hung up."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b""
        data += chunk
    return data


@dataclass(frozen=True)
class TestinfraTest:
    __test__ = False
    module: Path
    nodeid: str  # as pytest names it, with the host parameter
    name: str  # function[params] without the host parameter

    @property
    def digest(self) -> str:
        h = hashlib.sha256(self.nodeid.encode())
        h.update(self.module.read_bytes())
        conftest = self.module.parent / "conftest.py"
        if conftest.exists():
            h.update(conftest.read_bytes())
        return h.hexdigest()


def pytest_argv(module: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", PLUGIN, f"--hosts={HOST_PARAM}",
            "--rootdir", str(module.parent)]


def load_testinfra(module: Path) -> list[TestinfraTest]:
    module = module.resolve()
    if not module.is_file():
        raise SourceError(str(module), None, "testinfra module does not exist")
    try:
        compile(module.read_bytes(), str(module), "exec")
    except SyntaxError as exc:
        raise SourceError(str(module), exc.lineno, f"syntax error: {exc.msg}") from None
    res = subprocess.run([*pytest_argv(module), "--collect-only", "-q", module.name], cwd=module.parent,
                         capture_output=True, text=True, timeout=300)
    ids = [ln.strip() for ln in res.stdout.splitlines() if ln.startswith(f"{module.name}::")]
    if res.returncode not in (0, 5) or not ids:
        detail = _collect_error(res.stdout + res.stderr)
        raise SourceError(str(module), detail[0], f"pytest cannot collect tests from it: {detail[1]}"
                          if res.returncode not in (0, 5) else "no test functions in it")
    return [TestinfraTest(module, nid, _name(nid.split("::", 1)[1])) for nid in ids]


def _name(node: str) -> str:
    """``test_pkg[imageci://testbed-bash]`` → ``test_pkg[bash]``."""
    m = re.fullmatch(r"(.*)\[(.*)\]", node)
    if not m:
        return node
    params = m.group(2).replace(f"{HOST_PARAM}-", "", 1).replace(HOST_PARAM, "", 1)
    return f"{m.group(1)}[{params}]" if params else m.group(1)


def _collect_error(output: str) -> tuple[int | None, str]:
    line = None
    m = re.search(r":(\d+): in <module>", output)
    if m:
        line = int(m.group(1))
    errors = [ln.strip() for ln in output.splitlines() if ln.startswith("E ")]
    return line, (errors[-1].removeprefix("E").strip() if errors else output.strip().splitlines()[-1][:300])
