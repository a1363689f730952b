"""What a test kind provides to the engine. Test kinds see only the testbed
protocol, never a backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imageci.checks.findings import Finding as Finding  # re-exported: test kinds make them
from imageci.definitions.limits import Limits
from imageci.verdicts import Verdict

if TYPE_CHECKING:  # (a test kind runs on a testbed it is handed: reading a suite needs none)
    from imageci.testbeds.base import Testbed


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""
    exit_code: int | None = None
    log: bytes = b""
    findings: tuple[Finding, ...] = ()  # the machine's complaints in the test's window


class Check(ABC):
    """One test as the engine sees it. Every hook has a default here; a test kind
    overrides what it knows (a test kind never knows which backend runs it)."""

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    @abstractmethod
    def digest(self) -> str:
        """The test's content: evidence and the pass cache are keyed by it."""

    @property
    def needs(self) -> tuple[str, ...]:
        """Capability words the testbed must offer (``imageci.capabilities``); they also decide
        the testbed's mode and access when it is made."""
        return ()

    @property
    def flaky(self) -> bool:
        """Known flaky: a failure is reported as flaky and does not block the gate."""
        return False

    @property
    def description(self) -> str:
        return ""

    @property
    def limits(self) -> Limits:
        """The limits the test itself declares (empty: the suite's, the run's or the defaults)."""
        return Limits()

    @property
    def destructive(self) -> bool:
        """It breaks its testbed: never reused for another test."""
        return False

    @property
    def testbeds(self) -> tuple[str, ...]:
        """Only these testbeds run it (empty: any); elsewhere it is skipped with the reason."""
        return ()

    def precheck(self) -> Outcome | None:
        """A verdict reached without a testbed (e.g. skip: not executable), or None."""
        return None

    @abstractmethod
    def run(self, testbed: Testbed) -> Outcome: ...


def format_log(header: str, stdout: bytes, stderr: bytes) -> bytes:
    parts = [header.encode() + b"\n"]
    parts.append(b"--- stdout ---\n" + stdout + (b"" if stdout.endswith(b"\n") or not stdout else b"\n"))
    parts.append(b"--- stderr ---\n" + stderr + (b"" if stderr.endswith(b"\n") or not stderr else b"\n"))
    return b"".join(parts)
