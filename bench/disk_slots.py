"""Benchmark: a tree written into a sandbox's disk slot that the testbed before it filled and emptied, as a
suite's testbeds do one after another (what `apt-get install` or a build does in each): imageci's slots
(``testbeds.disks``: an ext4 of the test's disk limit, kept and emptied between testbeds) against the floor,
the same tree written into and removed from a tmpfs (no filesystem under it at all), and against the same slots
made without a journal as they were until issue 36 (ext4 then will not hand out an inode freed in the last
minute or so and scans the inode tables past each one).

The tree: 10,000 files of 4 KiB in 100 directories (`--quick`: 2,000), made once; each round copies it in
(`cp -a`, then `sync`) and empties the slot: the CPU time (user + system) of the copy, per round.

Last line: `disk slots: a tree into a reused slot X CPU-s per round vs tmpfs Y (ratio R); without a journal Z
(ratio S)`.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import sized  # noqa: E402

from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds import disks  # noqa: E402

ROUNDS = sized(6, 3)
FILES = sized(10_000, 2_000)
SLOT = 2 << 30


def children_cpu() -> float:
    """Seconds of CPU (user + system) this process's finished children spent: the copies' own system calls,
    where ext4 looks for a free inode."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    for d in range(100):
        (tree / f"d{d:02d}").mkdir(parents=True)
        for f in range(FILES // 100):
            (tree / f"d{d:02d}" / f"f{f:04d}").write_bytes(bytes([f % 251]) * 4096)
    return tree


class Slots:
    """Where a round writes: a slot of imageci's pool, emptied and kept for the next round's testbed (or, with
    no pool, the tmpfs directory itself)."""

    def __init__(self, pool: disks.DiskPool | None, floor: Path) -> None:
        self.pool, self.floor = pool, floor

    @contextmanager
    def place(self) -> Iterator[Path]:
        if self.pool is None:
            yield self.floor
            return
        slot = self.pool.acquire(SLOT)
        try:
            yield slot.path
        finally:
            self.pool.release(slot)

    def rounds(self, tree: Path) -> float:
        """CPU seconds per round: the tree copied in and flushed (then removed, outside the count)."""
        spent = 0.0
        for _ in range(ROUNDS):
            with self.place() as into:
                t = children_cpu()
                subprocess.run(["cp", "-a", str(tree), str(into / "tree")], check=True)
                subprocess.run(["sync", "-f", str(into)], check=True)
                spent += children_cpu() - t
                safe_rmtree(into / "tree")
        if self.pool is not None:
            self.pool.close()
        return spent / ROUNDS


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="imageci-bench-slots-", dir="/dev/shm") as shm, \
            tempfile.TemporaryDirectory(prefix="imageci-bench-slots-") as tmp:
        tree = make_tree(Path(shm))
        (Path(shm) / "floor").mkdir()
        floor = Slots(None, Path(shm) / "floor").rounds(tree)
        ours = Slots(disks.DiskPool(Path(tmp) / "now", "bench"), Path(shm)).rounds(tree)
        with mock.patch.object(disks, "JOURNAL", ["-O", "^has_journal"]):
            old = Slots(disks.DiskPool(Path(tmp) / "before", "bench"), Path(shm)).rounds(tree)
    print(f"tmpfs (the floor)   : {floor:.3f} CPU-s per round")
    print(f"slot with a journal : {ours:.3f}")
    print(f"slot without one    : {old:.3f}")
    print(f"disk slots: a tree into a reused slot {ours:.2f} CPU-s per round vs tmpfs {floor:.2f} "
          f"(ratio {ours / floor:.2f}); without a journal {old:.2f} (ratio {old / floor:.2f})")


if __name__ == "__main__":
    main()
