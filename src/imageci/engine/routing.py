"""Which worker may take which job: capability words and Celery queues.

A job is one test × testbed × image digest. What it requires is the testbed's
name, the image's architecture and, when the test needs them, ``gpu`` and
``kvm``. Each such set is one queue, named in a fixed order::

    imageci.<testbed>.<arch>[.gpu][.kvm]      e.g. imageci.sandbox.amd64, imageci.podman.amd64.gpu

A worker offers (testbed, architecture) pairs — the sandbox, podman and LXD
run every architecture this host's kernel or a binfmt_misc handler runs, qemu
the architectures it has a ``qemu-system-*`` for — plus ``gpu`` and ``kvm``
when it has them. It consumes every queue whose words it offers: a pair
with each subset of its extras. A job whose queue no live worker consumes
stays in the broker, and is shown as waiting for the words no worker offers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations

from imageci.capabilities import ARCH_PREFIX, GPU, KVM, arch

PREFIX = "imageci."
EXTRAS = (GPU, KVM)  # capability words that route a job, besides its testbed and architecture


@dataclass(frozen=True)
class Route:
    """What one job requires of the worker that takes it."""

    testbed: str
    architecture: str
    extras: frozenset[str] = frozenset()

    @property
    def queue(self) -> str:
        return ".".join([PREFIX.rstrip("."), self.testbed, self.architecture, *sorted(self.extras)])

    @property
    def words(self) -> frozenset[str]:
        return frozenset({self.testbed, arch(self.architecture), *self.extras})


def route(testbed: str, architecture: str, needs: Iterable[str]) -> Route:
    """The route of a test with ``needs`` on ``testbed`` for an image of ``architecture``."""
    return Route(testbed, architecture, frozenset(n for n in needs if n in EXTRAS))


def parse_queue(queue: str) -> Route | None:
    """The route a queue name stands for (None: not one of ours)."""
    if not queue.startswith(PREFIX):
        return None
    parts = queue[len(PREFIX):].split(".")
    if len(parts) < 2 or any(p not in EXTRAS for p in parts[2:]):
        return None
    return Route(parts[0], parts[1], frozenset(parts[2:]))


@dataclass(frozen=True)
class Offer:
    """What a worker offers: (testbed, architecture) pairs and extras."""

    pairs: frozenset[tuple[str, str]]
    extras: frozenset[str] = frozenset()

    @property
    def words(self) -> list[str]:
        """Its capabilities as words, for people: testbeds, arch:…, extras."""
        testbeds = sorted({t for t, _a in self.pairs})
        arches = sorted({arch(a) for _t, a in self.pairs})
        return [*testbeds, *arches, *sorted(self.extras)]

    def routes(self) -> list[Route]:
        subsets = [frozenset(c) for n in range(len(self.extras) + 1) for c in combinations(sorted(self.extras), n)]
        return [Route(t, a, s) for t, a in sorted(self.pairs) for s in subsets]

    def queues(self) -> list[str]:
        return [r.queue for r in self.routes()]

    def narrowed(self, words: Iterable[str]) -> Offer:
        """Only what ``words`` name too (``--capabilities``): testbed names, ``arch:…`` and extras; a
        kind of word not given at all (no testbed named, say) narrows nothing of that kind."""
        given = set(words)
        testbeds = {w for w in given if not w.startswith(ARCH_PREFIX) and w not in EXTRAS}
        arches = {w.removeprefix(ARCH_PREFIX) for w in given if w.startswith(ARCH_PREFIX)}
        pairs = {(t, a) for t, a in self.pairs if (not testbeds or t in testbeds) and (not arches or a in arches)}
        extras = {w for w in given if w in EXTRAS}
        return Offer(frozenset(pairs), frozenset(e for e in self.extras if not extras or e in extras))

    @classmethod
    def of_queues(cls, queues: Iterable[str]) -> Offer:
        """What a live worker offers, read back from the queues it consumes."""
        routes = [r for q in queues if (r := parse_queue(q)) is not None]
        return cls(frozenset((r.testbed, r.architecture) for r in routes),
                   frozenset(e for r in routes for e in r.extras))


def waiting_for(job: Route, offers: Iterable[Offer]) -> list[str]:
    """The words no live worker offers for ``job``: the fewest missing over the live workers (a worker
    with the testbed for other architectures lacks ``arch:…``); with no live worker, ``a live worker``."""
    best: list[str] | None = None
    for offer in offers:
        arches = {a for t, a in offer.pairs if t == job.testbed}
        missing = [] if arches else [job.testbed]
        if job.architecture not in (arches or {a for _t, a in offer.pairs}):
            missing.append(arch(job.architecture))
        missing += sorted(job.extras - offer.extras)
        if best is None or len(missing) < len(best):
            best = missing
    return best if best is not None else ["a live worker"]
