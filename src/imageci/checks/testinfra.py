"""pytest-testinfra test functions as checks, one result per function.

Each function runs in its own pytest process on the host with
``--hosts=imageci://testbed``; the testinfra ``host`` fixture's commands come
back over a private Unix socket to :class:`ExecBridge`, which runs them with
the testbed protocol's ``exec``. The module never learns which backend it
runs on, and the testbed stays isolated: only commands cross, no network.

Verdicts: the function passed → pass; an assertion or error in it → fail
(with pytest's message); ``pytest.skip`` → skip; pytest could not run it,
or the testbed broke under it → error.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from imageci import unixsock
from imageci.checks.base import Check, Outcome, format_log
from imageci.definitions.limits import Limits
from imageci.definitions.testinfra import SOCKET_ENV, TestinfraTest, load_testinfra, pytest_argv, read_message
from imageci.errors import ImageciError
from imageci.testbeds.base import Testbed
from imageci.verdicts import Verdict

DEFAULT_TIMEOUT = 300
COMMAND_TIMEOUT = 600


class ExecBridge:
    """Serves ``testbed.exec`` to one pytest process over a Unix socket."""

    def __init__(self, testbed: Testbed, directory: Path) -> None:
        self.testbed = testbed
        self.path = directory / "exec.sock"
        self.commands = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unixsock.bind(self._sock, self.path)  # any length of path
        os.chmod(self.path, 0o600)
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="imageci-exec-bridge", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        data = read_message(conn)
        if not data:
            return
        try:
            cmd = json.loads(data)["cmd"]
            self.commands += 1
            r = self.testbed.exec(["/bin/sh", "-c", cmd], timeout=COMMAND_TIMEOUT)
            reply = {"rc": r.exit_code if r.exit_code is not None else 124,
                     "stdout": base64.b64encode(r.stdout).decode(), "stderr": base64.b64encode(r.stderr).decode()}
        except (ImageciError, OSError, ValueError, KeyError) as exc:
            reply = {"error": str(exc)}
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class TestinfraCheck(Check):
    __test__ = False
    test: TestinfraTest
    timeout: int = DEFAULT_TIMEOUT

    @property
    def id(self) -> str:
        return f"testinfra:{self.test.module.stem}/{self.test.name}"

    @property
    def digest(self) -> str:
        return self.test.digest

    @property
    def needs(self) -> tuple[str, ...]:
        return ()

    @property
    def limits(self) -> Limits:
        return Limits()

    @property
    def flaky(self) -> bool:
        return False

    @property
    def description(self) -> str:
        return f"testinfra {self.test.nodeid.split('[')[0]}"

    def precheck(self) -> Outcome | None:
        return None

    def run(self, testbed: Testbed) -> Outcome:
        work = Path(tempfile.mkdtemp(prefix="imageci-testinfra-"))
        os.chmod(work, 0o700)
        bridge = ExecBridge(testbed, work)
        try:
            report = work / "report.xml"
            env = {**os.environ, SOCKET_ENV: str(bridge.path), "PYTHONDONTWRITEBYTECODE": "1"}
            try:
                res = subprocess.run([*pytest_argv(self.test.module), "-q", "--no-header", "-rN",
                                      f"--junitxml={report}", self.test.nodeid], cwd=self.test.module.parent,
                                     env=env, capture_output=True, timeout=self.timeout)
            except subprocess.TimeoutExpired as exc:
                log = format_log(f"# {self.test.nodeid}: timed out", exc.stdout or b"", exc.stderr or b"")
                return Outcome(Verdict.FAIL, f"timed out after {self.timeout}s", None, log)
            log = format_log(f"# pytest {self.test.nodeid} (exit {res.returncode}, {bridge.commands} testbed "
                             f"command(s))", res.stdout, res.stderr)
            return _verdict(res.returncode, report, log)
        finally:
            bridge.close()
            shutil.rmtree(work, ignore_errors=True)


def _verdict(code: int, report: Path, log: bytes) -> Outcome:
    case = None
    if report.exists():
        case = next(ET.parse(report).getroot().iter("testcase"), None)
    if case is not None:
        skipped = case.find("skipped")
        failure = case.find("failure")
        error = case.find("error")
        if skipped is not None:
            return Outcome(Verdict.SKIP, skipped.get("message", "skipped"), code, log)
        if failure is not None:
            return Outcome(Verdict.FAIL, _first_line(failure.get("message", "failed")), code, log)
        if error is not None:  # a fixture or the testbed broke, not an assertion
            return Outcome(Verdict.ERROR, _first_line(error.get("message", "error")), code, log)
        if code == 0:
            return Outcome(Verdict.PASS, "", code, log)
    return Outcome(Verdict.ERROR, f"pytest exit {code}", code, log)


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def checks_from_testinfra(module: Path) -> list[TestinfraCheck]:
    return [TestinfraCheck(t) for t in load_testinfra(module)]
