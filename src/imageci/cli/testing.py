"""How ``run``, ``test`` and ``pipeline`` show a run: the plan, each attempt, the summary."""

from __future__ import annotations

from rich.markup import escape

from imageci.app.planning import TestPlan
from imageci.app.testing import RunOutcome
from imageci.cli.context import console
from imageci.engine.runner import TestResult
from imageci.store.models import Attempt, label

COLOURS = {"pass": "green", "fail": "red", "error": "magenta", "skip": "yellow", "flaky": "yellow"}


def show_plan(plan: TestPlan) -> None:
    v = plan.version
    console.print(f"testing {label(v)} (sha256:{v.digest[:12]}): "
                  f"{len(plan.checks)} test(s) × {', '.join(plan.testbeds)}")


def show_event(what: str, result: TestResult, attempt: Attempt | None) -> None:
    assert attempt is not None
    colour = COLOURS.get(attempt.verdict, "white")
    extra = " (cached: passed before for these bytes)" if what == "cached" else (
        f" — {escape(attempt.reason)}" if attempt.reason else "")
    secs = (attempt.ended_at - attempt.started_at).total_seconds()
    tries = f" try {attempt.attempt}" if attempt.attempt > 1 else ""
    bed = escape(f"[{result.testbed}]")
    console.print(f"  [{colour}]{attempt.verdict:5}[/] {escape(result.test_id)} {bed}{tries} "
                  f"{'' if what == 'cached' else f'{secs:.2f}s'}{extra}", highlight=False)


def show_outcome(outcome: RunOutcome) -> None:
    report = outcome.report
    counts = {k: v for k, v in report.counts().items() if v}
    for r in report.results:
        if r.verdict != "flaky":
            continue
        tries = ", ".join(f"#{a.attempt} {a.verdict}" for a in r.attempts)
        waived = f" — {escape(r.waived)}" if r.waived else ""
        console.print(f"[yellow]flaky[/] {escape(r.test_id)} {escape(f'[{r.testbed}]')}: {tries}{waived}",
                      highlight=False)
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no tests"
    if report.interrupted:
        console.print("[yellow]interrupted[/]: running tests were stopped, their testbeds removed; "
                      "finished attempts are recorded")
    console.print(f"run {report.run_id}: {summary} → exit {int(report.exit_code)}; re-run it: {outcome.reproducer}",
                  highlight=False)
