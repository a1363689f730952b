"""Benchmark: a VM ready for tests, on the same image and disk, each against its floor.

* cold boot: imageci until SSH answers and systemd reports its state, against plain ``qemu -kernel`` until the
  serial console prints ``login:``, three of each in turn, medians (goal: at most 1.1× the floor);
* snapshot restore (the fresh-VM-per-test path, none restored ahead): imageci until SSH answers, against qemu
  loading the same snapshot until the VM runs again, nothing asked of the guest (goal: at most 1 s and 1.5× the
  floor);
* a new process: `imageci run REF TEST --testbed qemu --rerun-all`, the whole process, with the template the
  first boot kept in the home (a process used to boot the image again: the cold boot above).

Last line: `qemu: restore X s vs loadvm Y s (ratio R, goal ≤ 1 s and ≤ 1.5); cold boot C s vs plain boot P s
(ratio Q, goal ≤ 1.1); a new process's run N s`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, built_example, fresh_home, loadvm_times, restore_times, sized, time_to_prompt  # noqa: E402

from imageci.build.service import build_image  # noqa: E402
from imageci.config import Settings  # noqa: E402
from imageci.definitions.image import load_definition  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds.base import ImageHandle  # noqa: E402
from imageci.testbeds.vm.accel import qemu_binary  # noqa: E402
from imageci.testbeds.vm.qemu import QemuBackend  # noqa: E402

VM_DEF = REPO / "examples" / "debian-bookworm-vm" / "image.yaml"


def plain_boot(qemu: str, kernel: Path, initrd: Path, disk: Path, accel: str, timeout: float = 600) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp) / "o.qcow2"
        console = Path(tmp) / "console.log"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "qcow2", str(overlay)],
                       check=True)
        argv = [qemu, "-machine", f"q35,accel={accel}", "-cpu", "max", "-m", "1024", "-display", "none",
                "-monitor", "none", "-nodefaults", "-serial", f"file:{console}", "-kernel", str(kernel),
                "-initrd", str(initrd), "-append", "root=/dev/vda rw console=ttyS0",
                "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe", "-netdev", "user,id=n0,restrict=on",
                "-device", "virtio-net-pci,netdev=n0"]
        return time_to_prompt(argv, console, timeout)


def imageci_boot(backend: QemuBackend, image: ImageHandle) -> float:
    """Seconds of one more cold boot to SSH + systemd ready, as a template's (nothing saved or kept)."""
    run_dir, _ = backend.maker.run_state()
    workdir = Path(tempfile.mkdtemp(dir=run_dir, prefix="b"))  # (short: qemu's QMP socket lives in it)
    try:
        vm, ssh = backend.maker.cold_boot(image, workdir)
        ssh.close()
        vm.stop()
        return backend.last_boot[image.digest]
    finally:
        safe_rmtree(workdir)


def new_process_runs(settings: Settings, digest: str, n: int) -> list[float]:
    """Seconds of ``n`` whole ``imageci run`` processes of one test on the qemu testbed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    env.update(IMAGECI_HOME=str(settings.home))
    if settings.build_cache:
        env.update(IMAGECI_BUILD_CACHE=str(settings.build_cache))
    argv = [sys.executable, "-m", "imageci.cli", "run", f"sha256:{digest}", "kernel-present", "--testbed", "qemu",
            "--rerun-all"]
    times = []
    for _ in range(n):
        t = time.monotonic()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        times.append(time.monotonic() - t)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[2:])} exited {done.returncode}: {done.stdout[-2000:]}"
                             f"{done.stderr[-2000:]}")
    return times


def main() -> None:
    settings, catalog, store = fresh_home("qemu")
    try:
        built_example(settings, catalog, store)
        version = build_image(load_definition(VM_DEF), settings, catalog, store).version
        backend = QemuBackend(settings.home, settings.rootfs_cache, keep_warm=True)
        image = Engine(catalog, store, {}).image_handle(version)
        assets = backend.assets(image)
        qemu = qemu_binary() or "qemu-system-x86_64"

        t0 = time.monotonic()
        template = backend.pool.template(image)  # cold boot to ready (KVM demoted if it cannot boot), then save
        cold = backend.last_boot[image.digest]
        save = time.monotonic() - t0 - cold
        accel = backend.accel()
        assert assets.kernel is not None and assets.initrd is not None  # a rootfs VM: booted by its kernel
        floors = [plain_boot(qemu, assets.kernel, assets.initrd, assets.disk, accel)]
        colds = [cold]
        for _ in range(sized(2, 0)):  # more pairs, each side in turn: one boot swings by seconds on a busy host
            colds.append(imageci_boot(backend, image))
            floors.append(plain_boot(qemu, assets.kernel, assets.initrd, assets.disk, accel))
        cold, floor = statistics.median(colds), statistics.median(floors)
        restores = restore_times(backend, image, sized(3, 1))
        restore = statistics.median(restores)
        loadvm = statistics.median(loadvm_times(backend, image, sized(3, 1)))
        state_mb = template.state.stat().st_size / 1e6
        backend.shutdown()
        runs = new_process_runs(settings, version.digest, sized(3, 1))
        run = statistics.median(runs)
        print(f"accelerator           : {accel} ({backend.accel_cache.get().why})")
        print(f"plain qemu to login:  : {', '.join(f'{f:.1f}' for f in floors)} s (median {floor:.1f} s; floor: no "
              "SSH, no readiness probe)")
        print(f"imageci cold boot     : {', '.join(f'{c:.1f}' for c in colds)} s (median {cold:.1f} s) to SSH + "
              f"systemd ready; snapshot saved in {save:.1f} s ({state_mb:.0f} MB)")
        print(f"imageci restore       : {', '.join(f'{r:.2f}' for r in restores)} s (median {restore:.2f} s); "
              f"qemu loading the same snapshot alone {loadvm:.2f} s")
        print(f"imageci run, new process: {', '.join(f'{r:.1f}' for r in runs)} s (median {run:.1f} s): one test on "
              f"a VM restored from the template kept in the home (without it: a cold boot, {cold:.1f} s, first)")
        print(f"qemu: restore {restore:.2f} s vs loadvm {loadvm:.2f} s (ratio {restore / loadvm:.2f}, goal ≤ 1 s and "
              f"≤ 1.5); cold boot {cold:.1f} s vs plain boot {floor:.1f} s (ratio {cold / floor:.2f}, goal ≤ 1.1); "
              f"a new process's run {run:.1f} s")
    finally:
        catalog.close()
        safe_rmtree(settings.home)


if __name__ == "__main__":
    main()
