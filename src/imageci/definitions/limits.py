"""Resource limits a test runs under, and how tests ask for more.

Every testbed enforces them (see the testbed table in docs/testbeds.md):

``memory``  bytes of RAM (a VM's RAM on qemu); going over is an OOM kill
``pids``    processes and threads at once; going over makes fork() fail
``disk``    bytes the test may write to the image's filesystem; going over is ENOSPC
``output``  bytes a command may write to stdout + stderr before it is stopped
``log``     bytes of output kept per attempt: the head and the tail, with a marker saying how much was cut

Where a test's limits come from, later wins: the defaults below, the suite's
``limits:`` rules (by test-id glob), the test's own metadata (``suite.yaml``
``defaults:``/``tests:`` or ``# imageci-memory: 4G`` headers), and
``--limit KEY=VALUE`` on the command line.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

from imageci.errors import UsageError
from imageci.sizes import human_size, parse_size

KEYS = ("memory", "pids", "disk", "output", "log")
SIZE_KEYS = ("memory", "disk", "output", "log")


@dataclass(frozen=True)
class Limits:
    """Limits as declared: ``None`` leaves a limit to the layer below."""

    memory: int | None = None
    pids: int | None = None
    disk: int | None = None
    output: int | None = None
    log: int | None = None

    def over(self, base: Limits) -> Limits:
        """These limits on top of ``base``: what is set here wins."""
        return replace(base, **{f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None})

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def describe(self, key: str) -> str:
        value = getattr(self, key)
        if value is None:
            return "unlimited"
        return str(value) if key == "pids" else human_size(value)

    @classmethod
    def parse(cls, values: dict[str, str | int | None]) -> Limits:
        out: dict[str, int] = {}
        for key, raw in values.items():
            if raw is None:
                continue
            if key not in KEYS:
                raise ValueError(f"unknown limit {key!r} (limits: {', '.join(KEYS)})")
            if key == "pids":
                n = int(raw) if isinstance(raw, int) or str(raw).strip().isdigit() else -1
                if n <= 0:
                    raise ValueError(f"pids must be a positive integer (got {raw!r})")
                out[key] = n
            else:
                out[key] = parse_size(raw)
        return cls(**out)


DEFAULTS = Limits(memory=2 << 30, pids=4096, disk=2 << 30, output=1 << 30, log=4 << 20)


def parse_assignments(items: Sequence[str]) -> Limits:
    """``--limit memory=4G --limit pids=8192`` → Limits (a usage error names the bad one)."""
    values: dict[str, str | int | None] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"--limit {item!r}: expected KEY=VALUE (keys: {', '.join(KEYS)})")
        values[key.strip()] = value.strip()
    try:
        return Limits.parse(values)
    except ValueError as exc:
        raise UsageError(f"--limit: {exc}") from None


@dataclass(frozen=True)
class LimitRule:
    test: str  # glob on test ids
    limits: Limits


@dataclass(frozen=True)
class LimitPolicy:
    """Which limits each test of a run gets."""

    rules: tuple[LimitRule, ...] = ()  # the suite's ``limits:`` entries, in file order
    override: Limits = field(default_factory=Limits)  # --limit on the command line
    defaults: Limits = DEFAULTS

    def for_test(self, test_id: str, declared: Limits) -> Limits:
        effective = self.defaults
        for rule in self.rules:
            if fnmatch.fnmatchcase(test_id, rule.test):
                effective = rule.limits.over(effective)
        return self.override.over(declared.over(effective))
