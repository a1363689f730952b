"""How ``run``, ``test`` and ``pipeline`` show a run: the plan, each attempt, the summary."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from rich.markup import escape

from imageci.app.planning import TestPlan
from imageci.app.regressions import MARKS, Change
from imageci.app.testing import AttemptEvent, RunOutcome
from imageci.cli.context import COLOURS, console, err_console
from imageci.store.models import label
from imageci.verdicts import Verdict

PASSING = (Verdict.PASS, Verdict.FLAKY, Verdict.SKIP)

if TYPE_CHECKING:
    from imageci.app.holds import HoldRow
    from imageci.app.pipeline import Hooks, PipelineOutcome
    from imageci.build.service import BuildResult


def show_plan(plan: TestPlan) -> None:
    v = plan.version
    console.print(f"testing {label(v)} (sha256:{v.digest[:12]}): "
                  f"{len(plan.checks)} test(s) × {', '.join(plan.testbeds)}")


def show_event(e: AttemptEvent) -> None:
    colour = COLOURS.get(e.verdict, "white")
    extra = " (cached: passed before for these bytes)" if e.cached else (f" — {escape(e.reason)}" if e.reason else "")
    extra += " " + escape(f"[known failure: {e.known}]") if e.known else ""
    extra += "".join(" " + escape(f"[{f}]") for f in e.findings)
    tries = f" try {e.attempt}" if e.attempt > 1 else ""
    bed = escape(f"[{e.testbed}]")
    where = f" on {escape(e.worker)}" if e.worker else ""
    console.print(f"  [{colour}]{e.verdict:5}[/] {escape(e.test)} {bed}{tries} "
                  f"{'' if e.cached else f'{e.seconds:.2f}s'}{where}{extra}", highlight=False)


def show_held(rows: list[HoldRow]) -> None:
    """Each testbed just held, and the one command that enters it."""
    for h in rows:
        console.print(f"[yellow]held[/] {escape(h.test)} {escape(f'[{h.testbed}]')} until {h.until}: enter it with "
                      f"[bold]{escape(h.command)}[/] (remove it now: imageci release {h.id})", highlight=False)


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
        console.print(f"tests that failed and had no verdict there also ran on the stable version "
                      f"{label(base.version)}, to tell a regression from an old failure (reference run "
                      f"{base.run_id}):", highlight=False)
        for r in base.results:
            colour = COLOURS.get(r.verdict, "white")
            why = f" — {escape(r.reason)}" if r.reason and r.verdict != "pass" else ""
            console.print(f"  [{colour}]{r.verdict:5}[/] {escape(r.test_id)} {escape(f'[{r.testbed}]')}{why}",
                          highlight=False)
    show_changes(outcome)
    for b in outcome.investigated:
        if b.finding == "running":
            console.print(f"bisecting {escape(b.test)} {escape(f'[{b.testbed}]')} on the server: bisection {b.id} "
                          f"(`imageci bisections {escape(b.image)}` shows what it finds)", highlight=False)
            continue
        console.print(f"bisected {escape(b.test)} {escape(f'[{b.testbed}]')}: {b.finding} — {escape(b.explanation)} "
                      f"(bisection {b.id}, {b.test_runs} test runs)", highlight=False, soft_wrap=True)


def show_changes(outcome: RunOutcome) -> None:
    """Each failing test's change against the stable version (and each fixed one), with its mark."""
    told = [r for r in outcome.report.results if r.change and (r.change != Change.NEW or r.verdict not in PASSING)]
    for r in told:
        mark = MARKS[Change(r.change)]
        colour = "red" if r.change == Change.REGRESSION else "green" if r.change == Change.FIXED else "yellow"
        console.print(f"  {mark} [{colour}]{r.change:13}[/] {escape(r.test_id)} {escape(f'[{r.testbed}]')} — "
                      f"{escape(r.change_why)}", highlight=False)


class Steps:
    """A spinner that says what a workflow does (building, fetching, recording), out of the way while
    the plan and the attempts print."""

    def __init__(self, first: str = "", *, building: str = "",
                 on_built: Callable[[BuildResult], None] | None = None) -> None:
        self.status = console.status(first or "…")
        self.building, self.on_built = building, on_built
        self.first = first

    def __enter__(self) -> Steps:
        if self.first:
            self.status.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.status.stop()

    def step(self, what: str) -> None:
        self.status.update(what)
        self.status.start()

    def _line(self, line: str) -> None:
        if line.startswith(("I:", "W:", "E:")):
            self.status.update(f"building {self.building}: {line[:100]}")

    def _built(self, result: BuildResult) -> None:
        self.status.stop()
        if self.on_built is not None:
            self.on_built(result)

    def _plan(self, plan: TestPlan) -> None:
        self.status.stop()
        show_plan(plan)

    def hooks(self) -> Hooks:
        from imageci.app.pipeline import Hooks

        return Hooks(on_build_line=self._line, on_built=self._built, on_plan=self._plan, on_event=show_event,
                     on_step=self.step)


def show_pipeline(outcome: PipelineOutcome) -> None:
    """A pipeline's end: published where, the run, recorded where, promoted or why not."""
    ref = outcome.image
    if outcome.published is not None:
        console.print(f"published {ref} ({outcome.published.digest[:19]}) on {outcome.server}", highlight=False)
    show_outcome(outcome.run)
    if outcome.recorded is not None:
        console.print(f"recorded on {outcome.server}: run {outcome.recorded} of {ref}", highlight=False)
    if outcome.already_stable:
        console.print(f"{ref} is already stable")
    elif outcome.promoted:
        console.print(f"[green]gate holds[/]: promoted {ref} to [bold]stable[/]")
        for old in outcome.retired:
            console.print(f"retired {old} (inactive)")
    elif outcome.refused is not None:
        err_console.print(outcome.refused, markup=False, highlight=False, soft_wrap=True)
        err_console.print(f"[red]not promoted[/]: {ref} stays on testing")
