"""Which worker may take which job: queue names, what a worker consumes, what a waiting job lacks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from imageci.engine.routing import Offer, Route, parse_queue, route, waiting_for

TESTBEDS = st.sampled_from(["sandbox", "podman", "qemu", "lxd", "ssh:builder"])
ARCHES = st.sampled_from(["amd64", "arm64", "riscv64"])
EXTRAS = st.frozensets(st.sampled_from(["gpu", "kvm"]))


def test_a_job_routes_by_testbed_architecture_and_gpu_kvm_needs_only() -> None:
    assert route("podman", "amd64", ["root", "gpu", "network"]).queue == "imageci.podman.amd64.gpu"
    assert route("qemu", "arm64", ["kvm", "gpu"]).queue == "imageci.qemu.arm64.gpu.kvm"
    assert route("sandbox", "amd64", []).words == {"sandbox", "arch:amd64"}
    assert parse_queue("celery") is None and parse_queue("imageci.sandbox.amd64.fpga") is None


@given(TESTBEDS, ARCHES, EXTRAS)
def test_a_queue_name_stands_for_its_route(testbed: str, arch: str, extras: frozenset[str]) -> None:
    r = Route(testbed, arch, extras)
    assert parse_queue(r.queue) == r


@given(st.frozensets(st.tuples(TESTBEDS, ARCHES), min_size=1), EXTRAS, TESTBEDS, ARCHES, EXTRAS)
def test_a_worker_consumes_exactly_the_jobs_it_can_take(pairs: frozenset[tuple[str, str]], extras: frozenset[str],
                                                        testbed: str, arch: str, needs: frozenset[str]) -> None:
    offer = Offer(pairs, extras)
    job = Route(testbed, arch, needs)
    takes = job.queue in offer.queues()
    assert takes == ((testbed, arch) in pairs and needs <= extras)
    assert Offer.of_queues(offer.queues()) == offer  # `imageci workers` reads a worker's offer back
    assert (waiting_for(job, [offer]) == []) == takes


def test_capabilities_narrow_per_kind_of_word() -> None:
    offer = Offer(frozenset({("sandbox", "amd64"), ("sandbox", "arm64"), ("podman", "amd64"), ("qemu", "amd64")}),
                  frozenset({"kvm", "gpu"}))
    assert offer.narrowed(["arch:arm64"]) == Offer(frozenset({("sandbox", "arm64")}), frozenset({"kvm", "gpu"}))
    assert offer.narrowed(["sandbox", "podman", "gpu"]).pairs == {("sandbox", "amd64"), ("sandbox", "arm64"),
                                                                  ("podman", "amd64")}
    assert offer.narrowed(["sandbox", "gpu"]).extras == {"gpu"}
    assert offer.words == ["podman", "qemu", "sandbox", "arch:amd64", "arch:arm64", "gpu", "kvm"]


def test_a_waiting_job_names_what_no_live_worker_offers() -> None:
    amd = Offer(frozenset({("sandbox", "amd64"), ("qemu", "amd64")}), frozenset({"kvm"}))
    assert waiting_for(route("sandbox", "arm64", []), [amd]) == ["arch:arm64"]
    assert waiting_for(route("qemu", "arm64", ["kvm"]), [amd]) == ["arch:arm64"]
    assert waiting_for(route("podman", "amd64", ["gpu"]), [amd]) == ["podman", "gpu"]
    assert waiting_for(route("sandbox", "amd64", ["gpu"]), [amd]) == ["gpu"]
    gpu_box = Offer(frozenset({("podman", "amd64")}), frozenset({"gpu"}))
    assert waiting_for(route("podman", "amd64", ["gpu"]), [amd, gpu_box]) == []
    assert waiting_for(route("sandbox", "amd64", []), []) == ["a live worker"]
