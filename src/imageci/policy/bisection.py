"""Bisection's rules, pure: the failure signature an intermediate image must show to count as bad,
and the search for the smallest set of changes that makes a test fail (delta debugging, ddmin).

The search works on units (each a group of changes: the binary packages of one source first, then
each alone) and asks ``test(units)`` of the good image with those units' changes taken from the bad
one: ``fail`` (the pinned failure), ``pass``, or ``unresolved`` (it failed otherwise, or the harness
broke). Each set is tested once (answers are kept). A single culprit costs about one test per halving:
when the first half does not fail, the second is searched without testing it whole; only when that
finds nothing is the whole tested; when it fails, the changes of the first half the second needs are
searched (with the second taken whole), then those of the second, and general ddmin (Zeller and
Hildebrandt) makes the result 1-minimal — so a failure that needs two changes together is found as that
pair."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Answer = Literal["fail", "pass", "unresolved"]
TestMany = Callable[[list[tuple[str, ...]]], list[Answer]]  # several sets at once (they may run in parallel)

NOISE = re.compile(r"0x[0-9a-fA-F]+|\b[0-9a-fA-F]{8,}\b|\d+")
BOILERPLATE = ("# ", "--- ", "=== ")


def last_distinctive_line(log: str) -> str:
    """The log's last line that says something (not empty, not a header the harness wrote)."""
    for line in reversed(log.splitlines()):
        text = line.strip()
        if text and not text.startswith(BOILERPLATE):
            return text
    return ""


def signature(verdict: str, exit_code: int | None, log: str) -> str:
    """A failure, normalized: its verdict, exit code and the log's last distinctive line with numbers,
    addresses and hashes made alike (they differ from run to run)."""
    line = " ".join(NOISE.sub("N", last_distinctive_line(log)).split())[:200]
    return f"{verdict} (exit {'-' if exit_code is None else exit_code}): {line}"


def answer(verdict: str, sig: str, pinned: str) -> Answer:
    """What one run of an intermediate image says: the pinned failure, a pass, or neither."""
    if verdict == "pass":
        return "pass"
    return "fail" if verdict == "fail" and sig == pinned else "unresolved"


@dataclass
class Search:
    """One search: the answers so far, in the order they were asked."""

    test_many: TestMany
    answers: dict[frozenset[str], Answer] = field(default_factory=dict)
    asked: list[tuple[tuple[str, ...], Answer]] = field(default_factory=list)

    def ask(self, sets: Sequence[Sequence[str]]) -> list[Answer]:
        todo = list(dict.fromkeys(tuple(s) for s in sets if frozenset(s) not in self.answers))
        if todo:
            for s, got in zip(todo, self.test_many(todo), strict=True):
                self.answers[frozenset(s)] = got
                self.asked.append((s, got))
        return [self.answers[frozenset(s)] for s in sets]

    def fails(self, units: Sequence[str]) -> bool:
        return self.ask([units])[0] == "fail"

    def minimize(self, units: Sequence[str], *, fixed: Sequence[str] = ()) -> list[str]:
        """A 1-minimal subset of ``units`` that fails (with ``fixed`` always taken too); ``units`` with
        ``fixed`` are known to fail."""
        self.answers.setdefault(frozenset([*units, *fixed]), "fail")
        found = self._narrow(list(units), list(fixed), known=True)
        return found if found is not None else list(units)

    def _narrow(self, c: list[str], fixed: list[str], *, known: bool) -> list[str] | None:
        if len(c) == 1:
            return c if known or self.fails([*c, *fixed]) else None
        half = len(c) // 2
        d1, d2 = c[:half], c[half:]
        if self.fails([*d1, *fixed]):
            return self._narrow(d1, fixed, known=True)
        found = self._narrow(d2, fixed, known=False)
        if found is not None:
            return found
        if not known and not self.fails([*c, *fixed]):
            return None
        # neither half fails alone: what of the first half the second needs, then what of the second
        first = self._narrow(d1, [*fixed, *d2], known=True) or d1
        second = self._narrow(d2, [*fixed, *first], known=True) or d2
        return self._ddmin([*first, *second], fixed)

    def _ddmin(self, c: list[str], fixed: list[str]) -> list[str]:
        n = 2
        while len(c) >= 2:
            parts = [c[i * len(c) // n:(i + 1) * len(c) // n] for i in range(n)]
            parts = [p for p in parts if p]
            got = self.ask([[*p, *fixed] for p in parts])
            if "fail" in got:
                c, n = parts[got.index("fail")], 2
                continue
            if n > 2:
                rests = [[u for u in c if u not in p] for p in parts]
                got = self.ask([[*r, *fixed] for r in rests])
                if "fail" in got:
                    c, n = rests[got.index("fail")], max(n - 1, 2)
                    continue
            if n >= len(c):
                break
            n = min(len(c), 2 * n)
        return c
