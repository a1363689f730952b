"""A consumer's suite as a test: a project that builds on the image runs its own tests in it.

Its snapshot (``suite/``, and ``wheelhouse/`` when it brought one) is copied into the testbed; the
setup command (if any) then the command run in ``suite/`` with ``/bin/sh -c``. With a wheelhouse,
``PIP_NO_INDEX=1`` and ``PIP_FIND_LINKS`` point pip at it: dependencies install offline. Exit 0
passes, 77 skips, anything else (setup's included) fails. The testbed is never reused: setup changes
it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imageci.checks.base import Check, Outcome
from imageci.checks.consumerkeys import consumer_digest, consumer_test_id
from imageci.checks.script import _last_line
from imageci.testbeds.base import ExecResult, Testbed
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

CONSUMERS_DIR = "/var/tmp/imageci/consumers"
@dataclass(frozen=True)
class ConsumerSpec:
    name: str
    tree: Path  # the unpacked snapshot: suite/ [+ wheelhouse/]
    command: str
    setup: str | None
    timeout: int
    snapshot: str  # the snapshot blob's sha256
    gating: bool = False

    @property
    def digest(self) -> str:
        return consumer_digest(self.snapshot, self.command, self.setup, self.timeout)


def _phase(name: str, res: ExecResult) -> bytes:
    out = res.stdout + (b"" if res.stdout.endswith(b"\n") or not res.stdout else b"\n")
    err = res.stderr + (b"" if res.stderr.endswith(b"\n") or not res.stderr else b"\n")
    return (f"--- {name}: exit {res.exit_code} in {res.duration:.3f}s ---\n".encode() + out
            + (b"--- " + name.encode() + b" stderr ---\n" + err if err else b""))


@dataclass(frozen=True)
class ConsumerCheck(Check):
    spec: ConsumerSpec

    @property
    def id(self) -> str:
        return consumer_test_id(self.spec.name)

    @property
    def digest(self) -> str:
        return self.spec.digest

    @property
    def description(self) -> str:
        return f"consumer {self.spec.name}: {self.spec.command}"

    @property
    def destructive(self) -> bool:
        return True

    def run(self, testbed: Testbed) -> Outcome:
        inside = f"{CONSUMERS_DIR}/{self.spec.name}"
        testbed.copy_in(self.spec.tree, inside)
        env = {"IMAGECI_TEST": self.id, "IMAGECI_CONSUMER": self.spec.name, "HOME": "/root"}
        if (self.spec.tree / "wheelhouse").is_dir():
            env |= {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": f"{inside}/wheelhouse"}
        cwd = f"{inside}/suite"
        header = f"# consumer {self.spec.name} on {testbed.name}"
        log = b""
        if self.spec.setup:
            res = testbed.exec(["/bin/sh", "-c", self.spec.setup], timeout=self.spec.timeout, cwd=cwd, env=env)
            log += _phase("setup", res)
            if res.timed_out or res.exit_code != 0:
                why = (f"setup timed out after {self.spec.timeout}s" if res.timed_out else
                       f"setup failed: exit {res.exit_code}: {_last_line(res.stderr, res.stdout)}".rstrip(": "))
                return Outcome(Verdict.FAIL, why, None if res.timed_out else res.exit_code,
                               f"{header}: {why}\n".encode() + log)
        res = testbed.exec(["/bin/sh", "-c", self.spec.command], timeout=self.spec.timeout, cwd=cwd, env=env)
        log += _phase("command", res)
        if res.timed_out:
            why = f"timed out after {self.spec.timeout}s (process tree killed)"
            return Outcome(Verdict.FAIL, why, None, f"{header}: {why}\n".encode() + log)
        code = res.exit_code
        head = f"{header}: exit {code} in {res.duration:.3f}s\n".encode()
        if code == 0:
            return Outcome(Verdict.PASS, "", code, head + log)
        if code == SKIP_EXIT_CODE:
            return Outcome(Verdict.SKIP, _last_line(res.stdout, res.stderr) or "the suite skipped itself (exit 77)",
                           code, head + log)
        return Outcome(Verdict.FAIL, f"exit {code}: {_last_line(res.stderr, res.stdout)}".rstrip(": "), code,
                       head + log)
