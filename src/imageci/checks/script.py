"""Script tests: an executable; exit 0 passes, 77 skips, anything else fails."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from imageci.checks.base import Check, Outcome, format_log
from imageci.definitions.limits import Limits
from imageci.definitions.suite import ScriptTestSpec
from imageci.verdicts import SKIP_EXIT_CODE, Verdict

if TYPE_CHECKING:
    from imageci.testbeds.base import Testbed

TESTS_DIR = "/var/tmp/imageci/tests"  # /run and /tmp may be noexec tmpfs on a booted system


def _last_line(*blobs: bytes) -> str:
    for blob in blobs:
        lines = [ln.strip() for ln in blob.decode("utf-8", "replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:500]
    return ""


@dataclass(frozen=True)
class ScriptCheck(Check):
    spec: ScriptTestSpec

    @property
    def id(self) -> str:
        return self.spec.name

    @property
    def digest(self) -> str:
        return self.spec.digest

    @property
    def needs(self) -> tuple[str, ...]:
        return self.spec.needs

    @property
    def flaky(self) -> bool:
        return self.spec.flaky

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def testbeds(self) -> tuple[str, ...]:
        return self.spec.testbeds

    @property
    def destructive(self) -> bool:
        return self.spec.destructive

    @property
    def limits(self) -> Limits:
        return self.spec.limits

    def precheck(self) -> Outcome | None:
        if not self.spec.executable:
            return Outcome(Verdict.SKIP, f"{self.spec.path.name} is not executable (chmod +x it to run it)")
        return None

    def run(self, testbed: Testbed) -> Outcome:
        inside = f"{TESTS_DIR}/{self.spec.path.name}"
        testbed.copy_in(self.spec.path, inside)
        res = testbed.exec([inside], timeout=self.spec.timeout, cwd="/", env={"IMAGECI_TEST": self.spec.name})
        header = f"# test {self.spec.name} on {testbed.name}: "
        if res.timed_out:
            reason = f"timed out after {self.spec.timeout}s (process tree killed)"
            return Outcome(Verdict.FAIL, reason, None, format_log(header + reason, res.stdout, res.stderr))
        code = res.exit_code
        header += f"exit {code} in {res.duration:.3f}s"
        log = format_log(header, res.stdout, res.stderr)
        if code == 0:
            return Outcome(Verdict.PASS, "", code, log)
        if code == SKIP_EXIT_CODE:
            return Outcome(Verdict.SKIP, _last_line(res.stdout, res.stderr) or "test skipped itself (exit 77)",
                           code, log)
        return Outcome(Verdict.FAIL, f"exit {code}: {_last_line(res.stderr, res.stdout)}".rstrip(": "), code, log)
