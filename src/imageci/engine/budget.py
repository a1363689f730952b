"""Scheduling by resources, not only by count: each testbed kind declares what
one testbed costs (memory, CPUs) and the engine runs tests while the sum fits
the host's budget. A test costlier than the whole budget still runs, alone."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from imageci.testbeds.base import Cost


def available_memory_mb() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


def default_budget(memory_mb: int | None = None, cpus: float | None = None) -> Cost:
    """The host's budget: ``memory_mb`` (default 80% of available memory) and ``cpus`` (default
    the number of cores); Settings: IMAGECI_MEMORY_BUDGET_MB, IMAGECI_CPU_BUDGET."""
    return Cost(memory_mb if memory_mb is not None else int(available_memory_mb() * 0.8),
                cpus if cpus is not None else float(os.cpu_count() or 1))


class Budget:
    def __init__(self, total: Cost) -> None:
        self.total = total
        self._mem = 0
        self._cpu = 0.0
        self._running = 0
        self._cond = threading.Condition()

    def _fits(self, cost: Cost) -> bool:
        if self._running == 0:
            return True
        return self._mem + cost.memory_mb <= self.total.memory_mb and self._cpu + cost.cpus <= self.total.cpus + 1e-9

    @contextmanager
    def hold(self, cost: Cost) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self._fits(cost))
            self._mem += cost.memory_mb
            self._cpu += cost.cpus
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._mem -= cost.memory_mb
                self._cpu -= cost.cpus
                self._running -= 1
                self._cond.notify_all()
