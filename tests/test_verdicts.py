"""Verdict rules: one verdict per test and testbed from its attempts, and the run's exit code."""

from __future__ import annotations

from imageci.engine.aggregate import aggregate, exit_code_for
from imageci.exitcodes import ExitCode
from imageci.verdicts import Verdict

V = Verdict


def test_aggregation_rules() -> None:
    assert aggregate([V.PASS]) == V.PASS
    assert aggregate([V.FAIL, V.PASS]) == V.FLAKY
    assert aggregate([V.ERROR, V.PASS]) == V.FLAKY
    assert aggregate([V.FAIL, V.FAIL]) == V.FAIL
    assert aggregate([V.FAIL, V.ERROR]) == V.ERROR  # worst wins
    assert aggregate([V.SKIP]) == V.SKIP
    assert aggregate([V.FAIL], known_flaky=True) == V.FLAKY
    assert exit_code_for([V.PASS, V.FLAKY, V.SKIP]) == ExitCode.OK
    assert exit_code_for([V.PASS, V.FAIL]) == ExitCode.FAILED
    assert exit_code_for([V.FAIL, V.ERROR]) == ExitCode.ERROR
    assert exit_code_for([V.SKIP, V.SKIP]) == ExitCode.NO_TESTS
    assert exit_code_for([]) == ExitCode.NO_TESTS
