"""TAP version 13, with a YAML diagnostic block per non-passing test (and per test whose verdict changed
against the stable version)."""

from __future__ import annotations

from pathlib import Path

from imageci.engine.results import RunReport
from imageci.fs import write_file_atomically
from imageci.verdicts import Verdict


def tap(report: RunReport) -> str:
    import yaml  # (here: a run that writes no TAP never loads PyYAML)

    lines = ["TAP version 13", f"1..{len(report.results)}"]
    for i, r in enumerate(report.results, start=1):
        name = f"{r.test_id} [{r.testbed}]"
        if r.verdict == Verdict.SKIP:
            lines.append(f"ok {i} - {name} # SKIP {r.reason}")
            continue
        passed = any(a.verdict == Verdict.PASS for a in r.attempts)
        if r.waived and not passed:  # quarantined or new: TAP's TODO is "known to fail, not counted"
            lines.append(f"not ok {i} - {name} # TODO {r.waived}")
        else:
            ok = r.verdict in (Verdict.PASS, Verdict.FLAKY)
            lines.append(f"{'ok' if ok else 'not ok'} {i} - {name}")
        if r.verdict != Verdict.PASS or r.cached or r.change:
            diag: dict[str, object] = {"verdict": r.verdict.value, "attempts": [a.verdict for a in r.attempts]}
            if r.reason:
                diag["message"] = r.reason
            if r.change:  # against the stable version
                diag["change"] = r.change
                diag["change_why"] = r.change_why
            known = [a.known for a in r.attempts if a.known]
            if known:  # the tracker of the known failure its log matched
                diag["known"] = known[-1]
            if r.cached:
                diag["cached_from_run"] = r.attempts[0].run_id
            block = yaml.safe_dump(diag, sort_keys=False).rstrip("\n").splitlines()
            lines += ["  ---", *("  " + b for b in block), "  ..."]
    return "\n".join(lines) + "\n"


def write_tap(report: RunReport, path: Path) -> None:
    write_file_atomically(path, tap(report).encode("utf-8"))
