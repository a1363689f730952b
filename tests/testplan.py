"""How `make test` spreads the tests over its pytest-xdist workers (imported by conftest, where
pytest finds these hooks and the fixture).

`make test` runs four workers on the two cores (``--dist loadgroup --no-loadscope-reorder``): the
other two keep the CPU busy while one waits on a server, LXD, the network or a guest. A test file stays on one
worker (its module fixtures are made once; test_harness checks that groups hold). The files that
boot small VMs under TCG share a group; the two cloud disk files are groups of their own; files that
assert what LXD holds share another. The longest groups go first, in ``LONGEST_FIRST``'s order
(measured in CI; the rest follow in file order), and a worker takes its next group only as it starts
the last test of its current one (``OneAhead``), so a group of one long test never queues behind
another long group while a worker could take it. At most ``TCG_SLOTS`` tests that boot VMs under
TCG run at once (``tcg_turn``): each runs up to two VMs, a core each."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadGroupScheduling
from xdist.workermanage import WorkerController

SHARED_GROUPS = {
    "tcg": {"test_qemu", "test_multiarch", "test_arch", "test_diskimport", "test_vm_host"},
    "lxd": {"test_lxd", "test_feeds"},
    "dashboard": {"test_dashboard", "test_dashboard_browser"},  # one seeded site (real sandbox runs) for both
    "s3": {"test_objectstore", "test_replicas", "test_store_faults"},  # one SeaweedFS for all three
}
LONGEST_FIRST = ("test_clouddisk", "tcg", "test_dep8_parity", "test_consumers", "test_clouddisk_faults",
                 "bench-cloud_boot.py", "test_workers", "test_bisect", "test_structure", "test_server_remote", "lxd",
                 "bench-qemu_boot.py", "test_repro")
TCG_HEAVY = {"test_clouddisk", "test_clouddisk_faults", "tcg", "bench-cloud_boot.py", "bench-qemu_boot.py"}
TCG_SLOTS = 2


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadGroupScheduling | None:
    if config.getoption("dist") != "loadgroup":
        return None

    class OneAhead(LoadGroupScheduling):  # type: ignore[misc]  # xdist has no type information
        """``--dist loadgroup`` that gives a worker its next group when one test of its own is
        left, not three (xdist's default)."""

        def _reschedule(self, node: WorkerController) -> None:
            if self.workqueue and not node.shutting_down and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

    return OneAhead(config, log)


def group_of(item: pytest.Item) -> str:
    mark = item.get_closest_marker("xdist_group")
    return str(mark.args[0]) if mark is not None and mark.args else ""


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            module = item.path.stem
            group = next((g for g, modules in SHARED_GROUPS.items() if module in modules), module)
            item.add_marker(pytest.mark.xdist_group(group))
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item), len(rank)))  # stable: files stay whole, in order


@pytest.fixture(autouse=True)
def tcg_turn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Under xdist, a test of a ``TCG_HEAVY`` group waits for one of ``TCG_SLOTS`` turns, held in
    lock files the workers share (their common base directory)."""
    if group_of(request.node) not in TCG_HEAVY or not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent
    while True:
        for slot in range(TCG_SLOTS):
            fh = (shared / f".tcg-turn-{slot}").open("w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                yield
            finally:
                fh.close()  # releases the lock
            return
        time.sleep(0.5)
