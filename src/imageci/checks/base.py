"""What a test kind provides to the engine. Test kinds see only the testbed
protocol, never a backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from imageci.definitions.limits import Limits
from imageci.testbeds.base import Testbed
from imageci.verdicts import Verdict


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""
    exit_code: int | None = None
    log: bytes = b""


class Check(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def digest(self) -> str: ...

    @property
    def needs(self) -> tuple[str, ...]: ...

    @property
    def flaky(self) -> bool: ...

    @property
    def description(self) -> str: ...

    @property
    def limits(self) -> Limits:
        """The limits the test itself declares (empty: the suite's, the run's or the defaults)."""
        ...

    def precheck(self) -> Outcome | None:
        """A verdict reached without a testbed (e.g. skip: not executable), or None."""
        ...

    def run(self, testbed: Testbed) -> Outcome: ...


def format_log(header: str, stdout: bytes, stderr: bytes) -> bytes:
    parts = [header.encode() + b"\n"]
    parts.append(b"--- stdout ---\n" + stdout + (b"" if stdout.endswith(b"\n") or not stdout else b"\n"))
    parts.append(b"--- stderr ---\n" + stderr + (b"" if stderr.endswith(b"\n") or not stderr else b"\n"))
    return b"".join(parts)
