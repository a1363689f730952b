"""How ``run``, ``test`` and ``pipeline`` show a run: the plan, each attempt, the summary."""

from __future__ import annotations

import shlex

from rich.markup import escape

from imageci.app.planning import TestPlan
from imageci.app.testing import AttemptEvent, RunOutcome
from imageci.cli.context import COLOURS, console
from imageci.store.models import label


def show_plan(plan: TestPlan) -> None:
    v = plan.version
    console.print(f"testing {label(v)} (sha256:{v.digest[:12]}): "
                  f"{len(plan.checks)} test(s) × {', '.join(plan.testbeds)}")


def show_event(e: AttemptEvent) -> None:
    colour = COLOURS.get(e.verdict, "white")
    extra = " (cached: passed before for these bytes)" if e.cached else (f" — {escape(e.reason)}" if e.reason else "")
    tries = f" try {e.attempt}" if e.attempt > 1 else ""
    bed = escape(f"[{e.testbed}]")
    where = f" on {escape(e.worker)}" if e.worker else ""
    console.print(f"  [{colour}]{e.verdict:5}[/] {escape(e.test)} {bed}{tries} "
                  f"{'' if e.cached else f'{e.seconds:.2f}s'}{where}{extra}", highlight=False)


def show_status(line: str) -> None:
    """How jobs on workers go: started where, waiting for what."""
    console.print(f"  [dim]… {escape(line)}[/]", highlight=False)


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
    again = escape(shlex.quote(str(outcome.reproducer)))  # a home's path may hold spaces: paste it as it is
    console.print(f"run {report.run_id}: {summary} → exit {int(report.exit_code)}; re-run it: {again}",
                  highlight=False, soft_wrap=True)
    if outcome.baseline is not None:
        base = outcome.baseline.report
        console.print(f"consumers that failed also ran on the stable version {label(base.version)}, to tell whether "
                      "this version broke them:", highlight=False)
        for r in base.results:
            colour = COLOURS.get(r.verdict, "white")
            why = f" — {escape(r.reason)}" if r.reason and r.verdict != "pass" else ""
            console.print(f"  [{colour}]{r.verdict:5}[/] {escape(r.test_id)} {escape(f'[{r.testbed}]')}{why}",
                          highlight=False)
        console.print(f"run {base.run_id} ({label(base.version)}): exit {int(base.exit_code)}", highlight=False)
