"""Helpers shared by the benchmarks: a throwaway imageci home with the example built."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imageci.build.service import build_image
from imageci.config import Settings
from imageci.definitions.image import load_definition
from imageci.store.blobs import BlobStore
from imageci.store.catalog import Catalog
from imageci.store.models import Version
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.vm.qemu import QemuBackend

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "debian-bookworm-minimal" / "image.yaml"
# `--quick`: tiny sizes, so that CI runs every benchmark (tests/test_bench.py) and a refactor cannot break one
# unseen; its figures mean nothing then
QUICK = "--quick" in sys.argv[1:]
if QUICK:
    sys.argv.remove("--quick")


def sized(full: int, quick: int) -> int:
    """``full`` for a measurement, ``quick`` under ``--quick``."""
    return quick if QUICK else full


BUILD_CACHE = Path(os.environ.get("IMAGECI_TEST_BUILD_CACHE", Path.home() / ".cache" / "imageci" / "test-builds"))


def fresh_home(prefix: str, cache: bool = True) -> tuple[Settings, Catalog, BlobStore]:
    home = Path(tempfile.mkdtemp(prefix=f"imageci-bench-{prefix}-"))
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=os.cpu_count() or 1,
                        build_cache=BUILD_CACHE if cache else None)
    settings.ensure()
    return settings, Catalog.open(settings.db_url), BlobStore(settings.store_dir)


def built_example(settings: Settings, catalog: Catalog, store: BlobStore) -> Version:
    return build_image(load_definition(EXAMPLE), settings, catalog, store).version


def bwrap_floor_argv(lower: Path) -> list[str]:
    """bwrap's own arguments for the floor of a sandboxed test: ``true`` on the unpacked rootfs ``lower``, in the
    namespaces the sandbox makes (no overlay, no hardening, nothing recorded)."""
    return ["--ro-bind", str(lower), "/", "--proc", "/proc", "--dev", "/dev", "--unshare-ipc", "--unshare-pid",
            "--unshare-uts", "--unshare-net", "--die-with-parent", "--", "true"]


def pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def time_to_prompt(argv: list[str], console: Path, timeout: float = 900) -> float:
    """Start ``argv`` (a qemu writing its serial console to ``console``): seconds until the console
    shows a login prompt. The process is killed afterwards. Under ``--quick``, until the console shows
    anything at all: the same qemu, started the same way, without a second whole boot under TCG (a
    CPU-minute of CI's) for a figure that means nothing then."""
    import re

    from imageci.testbeds.vm.process import LOGIN_PROMPT

    seen = re.compile(r"\S") if QUICK else LOGIN_PROMPT
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < timeout:
            if console.exists() and seen.search(console.read_bytes().decode("utf-8", "replace")):
                return time.monotonic() - start
            if proc.poll() is not None:
                raise SystemExit(f"plain qemu exited ({proc.returncode}) before its login prompt")
            time.sleep(0.1)
        raise SystemExit("plain qemu never reached its login prompt")
    finally:
        proc.kill()
        proc.wait()


def restore_times(backend: QemuBackend, image: ImageHandle, n: int = 3) -> list[float]:
    """Seconds to a fresh VM from the image's snapshot until SSH answers, each restored in the call (none of
    the VMs restored ahead of time a test may find waiting), ``n`` times."""
    from imageci.fs import safe_rmtree

    times = []
    for _ in range(n):
        t = time.monotonic()
        vm, ssh, vdir = backend.pool.restore(image)
        times.append(time.monotonic() - t)
        try:
            assert ssh.exec(["true"]).exit_code == 0
        finally:
            ssh.close()
            vm.stop()
            safe_rmtree(vdir)
    return times


def loadvm_times(backend: QemuBackend, image: ImageHandle, n: int = 3) -> list[float]:
    """The floor of a restore: seconds until the same VM's memory is loaded and it runs again (qemu's own
    ``loadvm``: nothing asked of the guest), ``n`` times."""
    from imageci.fs import safe_rmtree

    times = []
    for _ in range(n):
        t = time.monotonic()
        vm, vdir = backend.pool.resumed(image)
        times.append(time.monotonic() - t)
        vm.stop()
        safe_rmtree(vdir)
    return times
