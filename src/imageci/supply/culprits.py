"""Which package changes most likely broke a suite that passed on the version before: each change
between the two versions is weighed by what points at it —

- it changes a runtime the suite declares (``.python-version`` → the python family), most of all the
  runtime's own package (``python3``) and when that runtime no longer meets the declaration;
- the failing log names a file the package owns (``/usr/lib/python3.13/…``) or the package itself;
- its upstream version moved by more than a patch level, or it was removed.

Ties keep the diff's order (by name). Nothing here runs anything: it reads the diff, the new version's
file owners and the log."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from imageci.definitions.runtimes import RuntimeConstraint
from imageci.supply.diff import PackageChange
from imageci.supply.runtimes import RUNTIME_PACKAGES, in_family, satisfies, upstream_version

_PATH = re.compile(r"(/(?:usr|lib|lib64|bin|sbin|etc|opt|var/lib)/[A-Za-z0-9._+@%/-]+)")
LOG_SCAN = 1 << 20  # the log's last MiB is read for paths and names


@dataclass
class Culprit:
    change: PackageChange
    score: int
    why: list[str] = field(default_factory=list)

    def describe(self) -> str:
        c = self.change
        what = {"added": f"{c.name} added ({c.after})", "removed": f"{c.name} removed (was {c.before})"}.get(
            c.change, f"{c.name} {c.before} → {c.after}")
        return what + (f" ({'; '.join(self.why)})" if self.why else "")


def _primary(tool: str, name: str) -> bool:
    return any(re.fullmatch(p, name) for p in RUNTIME_PACKAGES.get(tool, ())[:2])


def _bigger_than_patch(change: PackageChange) -> bool:
    if change.change in ("added", "removed"):
        return change.change == "removed"
    before, after = upstream_version(change.before or ""), upstream_version(change.after or "")
    return before.split(".")[:2] != after.split(".")[:2]


def rank(changes: Sequence[PackageChange], constraints: Sequence[RuntimeConstraint], log: str,
         owner: Callable[[str], str | None], limit: int = 3) -> list[Culprit]:
    """The ``limit`` changes most likely responsible, best first (only changes something points at;
    none when nothing does). ``owner`` maps an absolute path to the package owning it in the new version."""
    text = log[-LOG_SCAN:]
    named_paths: dict[str, str] = {}
    for m in _PATH.finditer(text):
        path = m.group(1).rstrip(".,:;)'\"")
        pkg = owner(path)
        if pkg is not None and pkg not in named_paths:
            named_paths[pkg] = path
    words = set(re.findall(r"[a-z0-9][a-z0-9+.-]+", text.lower()))
    out = []
    for change in changes:
        score, why = 0, []
        for c in constraints:
            if not in_family(c.tool, change.name):
                continue
            score += 3
            if _primary(c.tool, change.name):
                score += 2
                after = upstream_version(change.after or "")
                if after and not satisfies(c, after):
                    score += 2
                    why.append(f"{c.where} declares {c.describe()}")
                else:
                    why.append(f"a {c.tool} package; {c.where} declares {c.describe()}")
            else:
                why.append(f"part of {c.tool}, which {c.where} declares")
            break
        if change.name in named_paths:
            score += 2
            why.append(f"the log names {named_paths[change.name]}")
        elif change.name in words and len(change.name) > 3:
            score += 1
            why.append("the log names it")
        if score and _bigger_than_patch(change):
            score += 1
        if score:
            out.append(Culprit(change, score, why))
    out.sort(key=lambda c: -c.score)  # stable: the diff's order among equals
    return out[:limit]
