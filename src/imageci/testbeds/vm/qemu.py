"""qemu testbed: the image booted as a real VM.

The image's own kernel and initramfs boot it directly (no bootloader) from a
qcow2 made from the rootfs; every testbed writes to its own overlay. Access is
SSH over user-mode networking, forwarded on 127.0.0.1 only; the guest has no
other network. A key generated for this run is passed on the kernel command
line (``imageci.ssh_key=``) and installed by the image's first-boot unit; no
password exists. Readiness is probed (SSH answers, then systemd reports the
system state), never a fixed sleep.

Disk images (``format: disk``, an imported qcow2) boot unmodified through their
firmware — OVMF (UEFI) or SeaBIOS (``qemu-bios``) — with no kernel of ours:
the run's key, an instance id, a hostname and a network config reach the guest
through a cloud-init NoCloud seed (``cloudseed.py``); the guest's name server is
``guestdns.py``. Such a disk is ``qemu-img check``-ed before its first boot.
``reboot()`` lets qemu reset the machine (``set-action``) instead of ending and
waits for a new boot id; ``power_off()`` waits for the guest to stop qemu.

Fresh VM per test without a reboot: the first testbed of an image boots it
once, saves memory + disk (``migrate`` to a file, disk overlay frozen) and
every testbed — the first one included — starts by restoring that snapshot
into its own overlay (seconds instead of a cold boot). The snapshot is kept in
the home for later processes (``vmtemplates.py``): a new run restores it too.

Split by responsibility: ``process.py`` is one VM process (its shape, readiness),
``vmboot.py`` makes VMs (accelerator, run key, assets, overlays, cold boot),
``vmpool.py`` keeps snapshots and warm VMs, ``vmtemplates.py`` the snapshots
kept between processes, and this module is the backend and its testbed.

KVM is used only when a probe guest booted under it and a real boot then
reached SSH; otherwise TCG, with test timeouts multiplied
(``IMAGECI_TCG_MULTIPLIER``, default 3).

A test's limits shape its VM: ``memory`` is the VM's RAM and ``disk`` the free
space of its root filesystem (the disk image is sized for it, and every VM's
qcow2 overlay can never grow past that virtual size on the host). VMs of one
shape share a template; most runs use only the default shape. Inside the VM
there is no pids limit: a fork bomb can only take the VM down (an ``error``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from imageci.capabilities import (
    ARCHIVE,
    CLOUD_INIT,
    ISOLATION_CONTAINER,
    ISOLATION_MACHINE,
    KVM,
    LIMITS,
    PRIVILEGED,
    REBOOT,
    REVERT,
    ROOT,
    access,
    arch,
)
from imageci.config import Settings
from imageci.definitions.limits import DEFAULTS, Limits
from imageci.errors import TestbedError
from imageci.formats.rootfs import unpacked_rootfs
from imageci.formats.vmdisk import VmAssets, find_kernel
from imageci.fs import safe_rmtree
from imageci.leftovers import Sweep
from imageci.testbeds.archive import APT_CONF, GUEST_ADDRESS, apt_conf
from imageci.testbeds.base import Backend, CloudSeed, Cost, ExecResult, ImageHandle, PowerOff, Testbed
from imageci.testbeds.limits import limit_notes as describe_limits
from imageci.testbeds.ssh import SshTestbed
from imageci.testbeds.vm.accel import AccelCache, qemu_binary, vm_arch
from imageci.testbeds.vm.process import DEFAULT_SHAPE, LOGIN_GRACE_S, BootError, Shape, Vm, provide_names, wait_ready
from imageci.testbeds.vm.vmboot import VmMaker
from imageci.testbeds.vm.vmconsole import console_tail
from imageci.testbeds.vm.vmpool import SnapshotPool


class QemuBackend(Backend):
    name = "qemu"

    def __init__(self, home: Path, rootfs_cache: Path, *, cpus: int = 1,
                 boot_timeout: float | None = None, snapshot: bool = True, accel: str | None = None,
                 keep_warm: bool = False, warm: int = 1, tcg_multiplier: float = 3.0,
                 kernel_args: str = "", firmware: str = "auto", name: str = "qemu",
                 login_grace: float = LOGIN_GRACE_S) -> None:
        """``accel``: kvm, tcg or auto (KVM when proven); ``warm``: VMs restored ahead of time per image;
        ``tcg_multiplier``: test timeouts × this under TCG (Settings: IMAGECI_QEMU_ACCEL, _WARM_VMS,
        _TCG_MULTIPLIER). ``snapshot=False`` cold-boots every testbed; ``kernel_args`` are appended to
        the guests' kernel command line. ``firmware``: how disk images boot — ``auto`` (the first their
        disk names: UEFI for imageci's), ``uefi`` (OVMF) or ``bios`` (SeaBIOS). ``login_grace``: seconds a
        booting guest that showed its login prompt has to answer SSH before it is given up on."""
        self.name = name
        self.maker = VmMaker(home, rootfs_cache, cpus=cpus, boot_timeout=boot_timeout, accel=accel,
                             tcg_multiplier=tcg_multiplier, kernel_args=kernel_args, firmware=firmware,
                             login_grace=login_grace)
        self.pool = SnapshotPool(self.maker, warm=warm)
        self.rootfs_cache = rootfs_cache
        self.snapshot = snapshot
        self.cost = Cost(memory_mb=DEFAULT_SHAPE.memory_mb + 256, cpus=float(cpus))
        self.keep_warm = keep_warm  # keep templates across engine runs until shutdown()

    # what tests and benchmarks read
    @property
    def accel_cache(self) -> AccelCache:
        return self.maker.accel_cache

    @accel_cache.setter
    def accel_cache(self, cache: AccelCache) -> None:
        self.maker.accel_cache = cache

    @property
    def last_boot(self) -> dict[str, float]:
        return self.maker.last_boot

    @property
    def cold_boots(self) -> int:
        return self.maker.cold_boots

    @property
    def warm_made(self) -> int:
        return self.pool.warm_made

    def accel(self, architecture: str | None = None) -> str:
        return self.maker.accel(architecture)

    def timeout_multiplier(self, architecture: str | None = None) -> float:
        return self.maker.timeout_multiplier(architecture)

    def assets(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> VmAssets:
        return self.maker.assets(image, shape)

    def why_not(self, image: ImageHandle) -> str | None:
        spec = vm_arch(image.architecture)
        if spec is None:
            return f"imageci does not know how to boot {image.architecture} guests"
        if qemu_binary(image.architecture) is None:
            return f"{spec.binary} is not installed (apt-get install qemu-system for {image.architecture} guests)"
        if image.disk is not None:
            firmware = self.maker.firmware(image)
            if image.firmware and firmware not in image.firmware:
                return (f"the disk boots with {' and '.join(image.firmware)}, not {firmware} "
                        f"(testbed {self.name})")
            return None
        if self.maker.firmware_choice != "auto":
            return f"{self.name} boots disk images through {self.maker.firmware_choice}; this version is a rootfs"
        root = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
        if find_kernel(root) is None:
            return "the image has no kernel (/boot/vmlinuz-* and initrd.img-*): it cannot boot as a VM"
        return None

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        caps = {ROOT, REVERT, ISOLATION_MACHINE, ISOLATION_CONTAINER, PRIVILEGED, LIMITS, ARCHIVE, REBOOT,
                arch(image.architecture)}
        if image.disk is not None:
            caps.add(CLOUD_INIT)
        if self.accel(image.architecture) == "kvm":
            caps.add(KVM)
        return frozenset(caps)

    def fresh_vm(self, image: ImageHandle, shape: Shape) -> tuple[Vm, SshTestbed, Path]:
        """A VM for one testbed: a warm one, else restored from the snapshot (or cold-booted)."""
        if self.snapshot:
            return self.pool.take_warm(image, shape) or self.pool.restore(image, shape)
        run_dir, _ = self.maker.run_state()
        vdir = Path(tempfile.mkdtemp(dir=run_dir, prefix="vm-"))
        try:
            vm, ssh = self.maker.cold_boot(image, vdir, shape)
        except BaseException:
            safe_rmtree(vdir)
            raise
        return vm, ssh, vdir

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(),
               limits: Limits = DEFAULTS) -> QemuTestbed:
        return QemuTestbed(self, image, limits, archive=access(needs) == ARCHIVE)

    def expect(self, image: ImageHandle, testbeds: int) -> None:
        self.pool.expect(image, testbeds)

    def finish(self) -> None:
        """The engine calls this when a run is over."""
        if not self.keep_warm:
            self.shutdown()

    def finish_but_held(self) -> None:
        """Warm VMs stop (unless kept warm for later runs); the run's key and directory stay for the held VMs
        (the kept templates are their disks' backing files)."""
        if not self.keep_warm:
            self.pool.shutdown()

    def shutdown(self) -> None:
        """Stop warm VMs; remove this run's templates, key and archive proxies."""
        self.pool.shutdown()
        self.maker.shutdown()


class QemuTestbed(Testbed):
    name = "qemu"

    def __init__(self, backend: QemuBackend, image: ImageHandle, limits: Limits = DEFAULTS,
                 archive: bool = False) -> None:
        self.backend = backend
        self.archive = archive
        self.image = image
        self.limits = limits.over(DEFAULTS)
        self.shape = Shape.of(self.limits)
        self._notes: list[str] = []
        self.vm: Vm | None = None
        self.ssh: SshTestbed | None = None
        self.dir: Path | None = None
        self.restored = False

    def capabilities(self) -> frozenset[str]:
        caps = self.backend.capabilities(self.image)
        return caps if self.archive else caps - {ARCHIVE}

    def open(self) -> None:
        try:
            self.vm, self.ssh, self.dir = self.backend.fresh_vm(self.image, self.shape)
            self.restored = self.backend.snapshot
            self.ssh.limits = self.limits  # the output limit applies to the test's commands
            if not self.restored:  # (a restored VM's template had them before it was saved)
                provide_names(self.ssh)
            if self.archive:
                self.ssh.exec(["sh", "-c", f"mkdir -p {os.path.dirname(APT_CONF)} && cat > {APT_CONF}"],
                              stdin=apt_conf(GUEST_ADDRESS).encode(), timeout=60)
        except BaseException:
            self.close()
            raise

    def limit_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        if self.ssh is not None:
            notes += self.ssh.limit_notes()
        return notes

    def _ssh(self) -> SshTestbed:
        if self.ssh is None or self.vm is None:
            raise TestbedError("the VM is not running")
        return self.ssh

    def attached(self, argv: Sequence[str], *, tty: bool, fds: tuple[int, int, int],
                 env: Mapping[str, str] | None = None) -> int:
        return self._ssh().attached(argv, tty=tty, fds=fds, env=env)

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None) -> ExecResult:
        ssh = self._ssh()
        scaled = timeout * self.backend.timeout_multiplier(self.image.architecture) if timeout else None
        console_at = self._console_size()
        try:
            res = ssh.exec(argv, env={"IMAGECI_TESTBED": self.name, **(env or {})}, timeout=scaled, stdin=stdin,
                           cwd=cwd)
        except TestbedError as exc:
            self._explain(console_at, check_disk=False)
            alive = self.vm is not None and self.vm.alive()
            why = "the VM powered off or crashed" if not alive else "the SSH connection dropped (sshd stopped?)"
            raise BootError(f"lost the VM during the test: {why}: {exc}", self.console_log()) from exc
        if res.exit_code != 0:
            self._explain(console_at, check_disk=True)
        return res

    def _console_size(self) -> int:
        return self.vm.console_size() if self.vm is not None else 0

    def _console_since(self, console_at: int) -> str:
        """What the guest said on its console since ``console_at`` (at most the last 1 MiB)."""
        if self.vm is None:
            return ""
        try:
            with self.vm.console.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(console_at, fh.tell() - (1 << 20)))
                return fh.read(1 << 20).decode("utf-8", "replace")
        except OSError:
            return ""

    def _explain(self, console_at: int, check_disk: bool) -> None:
        """After a failed command: did the VM's kernel kill for memory, or is its disk full?"""
        notes = []
        if self.vm is not None:
            said = self._console_since(console_at)
            kills = said.count("Out of memory: Killed process")
            if kills or "oom-kill" in said:
                notes += describe_limits(self.limits, oom_kills=max(1, kills),
                                     memory_is=f"the VM's {self.limits.describe('memory')} of RAM")
        if check_disk and self.ssh is not None:
            r = self.ssh.exec(["stat", "-f", "-c", "%a %S %d", "/"], timeout=30)
            parts = r.stdout.decode().split()
            if r.exit_code == 0 and len(parts) == 3 and (int(parts[0]) * int(parts[1]) < (1 << 20) or parts[2] == "0"):
                notes += describe_limits(self.limits, disk_full=True)
        self._notes += [n for n in notes if n not in self._notes]

    def copy_in(self, src: Path, dest: str) -> None:
        self._ssh().copy_in(src, dest)

    def copy_out(self, src: str, dest: Path) -> None:
        self._ssh().copy_out(src, dest)

    def console_log(self) -> str:
        return console_tail(self.vm.console) if self.vm else ""

    def cloud_seed(self) -> CloudSeed | None:
        return self.vm.told if self.vm is not None else None

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            vm = self.vm
            return self.backend.maker.boot_timeout_for(vm.accel if vm is not None else "tcg")
        return timeout * self.backend.timeout_multiplier(self.image.architecture)

    def _boot_id(self, ssh: SshTestbed) -> str:
        r = ssh.exec(["cat", "/proc/sys/kernel/random/boot_id"], timeout=60)
        if r.exit_code != 0:
            raise TestbedError(f"cannot read the VM's boot id: {r.stderr.decode('utf-8', 'replace').strip()}")
        return r.stdout.decode().strip()

    def _ask(self, ssh: SshTestbed, command: str) -> None:
        """Start ``command`` in the guest without waiting for it (the connection may drop)."""
        with contextlib.suppress(TestbedError):
            ssh.exec(["sh", "-c", f"nohup sh -c {shlex.quote(f'sleep 1; {command}')} >/dev/null 2>&1 </dev/null &"],
                     timeout=30)

    def reboot(self, timeout: float | None = None) -> None:
        """The guest reboots itself; qemu resets the machine (firmware, boot loader, kernel) instead of
        ending, and the testbed waits until SSH answers from a new boot (a new boot id)."""
        ssh, vm = self._ssh(), self.vm
        assert vm is not None
        limit = self._timeout(timeout)
        before = self._boot_id(ssh)
        vm.reboot_resets(True)
        try:
            self._ask(ssh, "systemctl reboot || reboot")
            deadline = time.monotonic() + limit
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BootError(f"the VM did not come back from its reboot within {limit:.0f}s", vm.boot_log())
                try:
                    fresh = wait_ready(vm, left)
                    if self._boot_id(fresh) != before:
                        break
                    fresh.disconnect()  # the old system, on its way down
                except BootError:
                    raise
                except TestbedError:
                    pass  # reached the old system as it went down
                time.sleep(1)
            vm.reboot_resets(False)
        except TestbedError as exc:
            if isinstance(exc, BootError):
                raise
            raise BootError(f"the VM's reboot failed: {exc}", vm.boot_log()) from exc
        fresh.limits = self.limits
        ssh.disconnect()
        self.ssh = fresh

    def power_off(self, timeout: float) -> PowerOff:
        ssh, vm = self._ssh(), self.vm
        assert vm is not None
        console_at = self._console_size()
        limit = self._timeout(timeout)
        self._ask(ssh, "systemctl poweroff || poweroff")
        started = time.monotonic()
        while vm.alive() and time.monotonic() - started < limit:
            time.sleep(0.2)
        seconds = None if vm.alive() else time.monotonic() - started
        said = self._console_since(console_at)
        ssh.disconnect()
        vm.stop()
        self.ssh = None
        return PowerOff(seconds, said)

    def revert(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        if self.ssh is not None:
            self.ssh.disconnect()
        if self.vm is not None:
            self.vm.stop()
            self.vm = None
        self.ssh = None
        if self.dir is not None:
            safe_rmtree(self.dir)
            self.dir = None


def sweep(settings: Settings, sweep: Sweep) -> None:
    """``imageci gc``: a dead owner's VMs (their qemu processes) and their disks."""
    sweep.dead_trees(settings.tmp_dir / "vms", "run-")
