"""Workers as a team sees them: what this host offers (from the same facts as
`imageci doctor`), narrowed by ``--capabilities``, and the live workers with
their capabilities and current jobs (Celery's own inspection)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from imageci.capabilities import GPU, KVM
from imageci.config import Settings
from imageci.engine.routing import EXTRAS, Offer
from imageci.errors import UsageError
from imageci.hostarch import host_architecture, runnable_architectures
from imageci.testbeds.gpu import why_no_gpu
from imageci.testbeds.hostcheck import check_host
from imageci.testbeds.vm.accel import VM_ARCHES, qemu_binary

if TYPE_CHECKING:
    from celery import Celery


class OfferNote(BaseModel):
    word: str  # a testbed or capability word
    offered: bool
    why: str


def detect_offer(settings: Settings) -> tuple[Offer, list[OfferNote]]:
    """What this host can take: testbeds × architectures, and ``kvm``/``gpu``; with a note per word."""
    findings = check_host(settings.home, refresh=False)
    ok = {(f.area, f.name): f for f in findings}
    notes: list[OfferNote] = []
    arches = runnable_architectures()
    pairs: set[tuple[str, str]] = set()
    bad = [f"{f.name}: {f.detail}" for f in findings if f.area == "sandbox" and f.required and not f.ok]
    if not bad:
        pairs |= {("sandbox", a) for a in arches}
    notes.append(OfferNote(word="sandbox", offered=not bad, why="; ".join(bad) or ", ".join(arches)))
    for testbed, key, runs in (("podman", ("podman", "podman + runc"), arches),
                               ("lxd", ("lxd", "LXD daemon"), [host_architecture()])):
        f = ok.get(key)
        usable = f is not None and f.ok
        if usable:
            pairs |= {(testbed, a) for a in runs}
        notes.append(OfferNote(word=testbed, offered=usable, why=", ".join(runs) if usable else
                               (f.detail if f else "not checked")))
    vms = [a for a in VM_ARCHES if qemu_binary(a)]
    pairs |= {("qemu", a) for a in vms}
    notes.append(OfferNote(word="qemu", offered=bool(vms), why=", ".join(vms) or "no qemu-system-* installed"))
    extras: set[str] = set()
    kvm = ok.get(("qemu", "KVM"))
    if kvm is not None and kvm.ok:
        extras.add(KVM)
    notes.append(OfferNote(word=KVM, offered=KVM in extras, why=kvm.detail if kvm else "no qemu"))
    gpu = why_no_gpu()
    if gpu is None:
        extras.add(GPU)
    notes.append(OfferNote(word=GPU, offered=gpu is None, why=gpu or "nvidia-smi -L lists GPUs; CDI spec found"))
    return Offer(frozenset(pairs), frozenset(extras)), notes


def worker_offer(settings: Settings, capabilities: Sequence[str]) -> Offer:
    """This host's offer narrowed to ``capabilities`` (empty: all of it). Naming what the host does not
    have is a usage error that says why it lacks it."""
    offer, notes = detect_offer(settings)
    if not capabilities:
        narrowed = offer
    else:
        have = set(offer.words)
        missing = [w for w in capabilities if w not in have]
        if missing:
            why = {n.word: n.why for n in notes if not n.offered}
            raise UsageError("this host does not offer " + "; ".join(
                f"{w}" + (f" ({why[w]})" if w in why else "") for w in missing)
                + f". It offers: {', '.join(offer.words) or 'nothing'}")
        narrowed = offer.narrowed(capabilities)
    if not narrowed.pairs:
        raise UsageError("this host offers no testbed a job could run on: "
                         + "; ".join(f"{n.word}: {n.why}" for n in notes if not n.offered and n.word not in EXTRAS))
    return narrowed


def prepare(settings: Settings, capabilities: Sequence[str]) -> tuple[list[str], Offer]:
    """What a worker does before it takes jobs: gc of dead owners' leftovers in this home (a worker killed
    mid-test), then this host's offer narrowed to ``capabilities``."""
    from imageci.engine.gc import collect_garbage
    from imageci.homelock import HomeLock

    done, _kept = collect_garbage(settings, HomeLock(settings.home), force=True)
    return done, worker_offer(settings, capabilities)


def broker(settings: Settings) -> Celery:
    """The Celery application of this home's broker (``IMAGECI_BROKER_URL``)."""
    from imageci.engine.broker import celery_app

    return celery_app(settings.broker_url, settings.visibility_timeout)


class WorkerRow(BaseModel):
    name: str
    capabilities: list[str]
    queues: list[str]
    jobs: list[str]  # "TEST on TESTBED (NAME@SERIAL, run N)"


def live_workers(settings: Settings, timeout: float = 1.0) -> list[WorkerRow]:
    """The workers the broker reaches now, what they offer and what they run."""
    from imageci.engine.fanout import live_workers as inspect_workers
    from imageci.engine.jobs import Job

    rows = []
    for name, (offer, active) in inspect_workers(broker(settings), timeout).items():
        jobs = []
        for task in active:
            args = task.get("args") or []
            try:
                job = Job.model_validate(args[0])
                jobs.append(f"{job.test} on {job.testbed} ({job.image}, run {job.run})")
            except (IndexError, ValueError):
                jobs.append(str(task.get("name", "?")))
        rows.append(WorkerRow(name=name, capabilities=offer.words, queues=offer.queues(), jobs=jobs))
    return rows
