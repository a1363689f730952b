"""Benchmark: a cloud disk image (examples/debian-bookworm-cloud) booted through
its firmware (OVMF), with its cloud-init NoCloud seed, on the same disk:

* plain ``qemu-system-x86_64`` with OVMF and the same seed, until the serial
  console prints the login prompt (the floor: what a person does by hand);
* imageci's cold boot (the template), timed from the call — overlay, seed,
  firmware, boot loader, kernel, cloud-init — to the same login prompt on its
  console, and on to SSH-ready (SSH answers and systemd finished starting);
* imageci's snapshot restore to SSH-ready (the fresh-VM-per-test path).

* qemu loading the same snapshot alone, until the VM runs again (the restore's floor).

Last line: `cloud disk: restore Y s vs loadvm L s (ratio R, goal ≤ 1 s and ≤ 1.5); to the login prompt imageci A s
vs plain qemu B s (overhead C%); cold boot to SSH-ready X s`.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, fresh_home, loadvm_times, restore_times, sized, time_to_prompt  # noqa: E402

from imageci.build.service import build_image  # noqa: E402
from imageci.definitions.image import load_definition  # noqa: E402
from imageci.engine.runner import Engine  # noqa: E402
from imageci.fs import safe_rmtree  # noqa: E402
from imageci.testbeds.vm.accel import qemu_binary  # noqa: E402
from imageci.testbeds.vm.cloudseed import MAC  # noqa: E402
from imageci.testbeds.vm.process import LOGIN_PROMPT, ovmf_files  # noqa: E402
from imageci.testbeds.vm.qemu import QemuBackend  # noqa: E402

CLOUD_DEF = REPO / "examples" / "debian-bookworm-cloud" / "image.yaml"


def _login_seen(console: Path) -> bool:
    try:
        return LOGIN_PROMPT.search(console.read_bytes().decode("utf-8", "replace")) is not None
    except OSError:
        return False


def plain_boot(qemu: str, disk: Path, seed: Path, accel: str, timeout: float = 900) -> float:
    """Seconds from qemu's start to the login prompt on its serial console."""
    code, template = ovmf_files()
    with tempfile.TemporaryDirectory() as tmp:
        overlay, console, uefi_vars = Path(tmp) / "o.qcow2", Path(tmp) / "console.log", Path(tmp) / "VARS.fd"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(disk), "-F", "qcow2", str(overlay)],
                       check=True)
        shutil.copyfile(template, uefi_vars)
        argv = [qemu, "-machine", f"q35,accel={accel}", "-cpu", "max", "-m", "1024", "-display", "none",
                "-monitor", "none", "-nodefaults", "-serial", f"file:{console}",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={uefi_vars}",
                "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe",
                "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
                "-netdev", "user,id=n0,restrict=on,ipv6=off", "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"]
        return time_to_prompt(argv, console, timeout)


def main() -> None:
    settings, catalog, store = fresh_home("cloud")
    try:
        version = build_image(load_definition(CLOUD_DEF), settings, catalog, store).version
        backend = QemuBackend(settings.home, settings.rootfs_cache, keep_warm=True, warm=0)
        image = Engine(catalog, store, {}).image_handle(version)
        assert image.disk is not None
        qemu = qemu_binary() or "qemu-system-x86_64"

        login: list[float] = []
        started = time.monotonic()
        done = threading.Event()

        def watch() -> None:  # the template's console, for its login prompt
            while not done.is_set():
                consoles = list(backend.maker.workroot.glob("run-*/t0-*/console.log"))
                if consoles and _login_seen(consoles[0]):
                    login.append(time.monotonic() - started)
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        backend.pool.template(image)  # cold boot to SSH-ready, then the snapshot is saved
        cold = time.monotonic() - started
        ready = backend.last_boot[image.digest]
        done.set()
        watcher.join()
        accel = backend.accel()
        seed = backend.maker.seed().path
        floor = plain_boot(qemu, image.disk, seed, accel)
        restores = restore_times(backend, image, sized(3, 1))
        restore = statistics.median(restores)
        loadvm = statistics.median(loadvm_times(backend, image, sized(3, 1)))
        backend.shutdown()
        to_login = login[0] if login else float("nan")
        print(f"accelerator             : {accel} ({backend.accel_cache.get().why})")
        print(f"plain qemu to login     : {floor:.1f} s (OVMF, the same disk and seed)")
        print(f"imageci to login        : {to_login:.1f} s from the call (overlay, seed, qemu, firmware, boot)")
        print(f"imageci cold to ready   : {ready:.1f} s (SSH answers, systemd finished); with the snapshot saved "
              f"{cold:.1f} s")
        print(f"imageci restore         : {', '.join(f'{r:.2f}' for r in restores)} s (median {restore:.2f} s); "
              f"qemu loading the same snapshot alone {loadvm:.2f} s")
        overhead = (to_login / floor - 1) * 100
        print(f"cloud disk: restore {restore:.2f} s vs loadvm {loadvm:.2f} s (ratio {restore / loadvm:.2f}, goal ≤ 1 s "
              f"and ≤ 1.5); to the login prompt imageci {to_login:.1f} s vs plain qemu {floor:.1f} s (overhead "
              f"{overhead:+.1f}%); cold boot to SSH-ready {ready:.1f} s")
    finally:
        catalog.close()
        safe_rmtree(settings.home)


if __name__ == "__main__":
    main()
