"""qemu testbed: the image booted as a real VM.

The image's own kernel and initramfs boot it directly (no bootloader) from a
qcow2 made from the rootfs; every testbed writes to its own overlay. Access is
SSH over user-mode networking, forwarded on 127.0.0.1 only; the guest has no
other network. A key generated for this run is passed on the kernel command
line (``imageci.ssh_key=``) and installed by the image's first-boot unit; no
password exists. Readiness is probed (SSH answers, then systemd reports the
system state), never a fixed sleep.

Fresh VM per test without a reboot: the first testbed of an image boots it
once, saves memory + disk (``migrate`` to a file, disk overlay frozen) and
every testbed — the first one included — starts by restoring that snapshot
into its own overlay (seconds instead of a cold boot).

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

import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imageci.build.rootfs import unpacked_rootfs
from imageci.build.vmdisk import VmAssets, find_kernel, vm_assets
from imageci.capabilities import (
    ARCHIVE,
    ISOLATION_CONTAINER,
    ISOLATION_MACHINE,
    LIMITS,
    PRIVILEGED,
    REVERT,
    ROOT,
    access,
)
from imageci.definitions.limits import DEFAULTS, Limits
from imageci.errors import HostSetupError, TestbedError
from imageci.fs import safe_rmtree
from imageci.owners import process_owner
from imageci.testbeds.accel import AccelCache, AccelProbe, qemu_binary, vm_arch
from imageci.testbeds.archive import APT_CONF, GUEST_ADDRESS, apt_conf, archive_hosts, host_listener, proxy
from imageci.testbeds.base import Backend, Cost, ExecResult, ImageHandle, Testbed
from imageci.testbeds.hostarch import host_architecture
from imageci.testbeds.limits import limit_notes as describe_limits
from imageci.testbeds.ssh import SshTestbed
from imageci.testbeds.vm import DEFAULT_SHAPE, BootError, Shape, Vm, wait_ready
from imageci.testbeds.vmconsole import console_tail


@dataclass
class Template:
    """A booted-and-saved VM: frozen disk overlay + memory state."""

    disk: Path
    state: Path
    boot_seconds: float


class QemuBackend(Backend):
    name = "qemu"

    def __init__(self, home: Path, rootfs_cache: Path, *, cpus: int = 1,
                 boot_timeout: float | None = None, snapshot: bool = True, accel: str | None = None,
                 keep_warm: bool = False, warm: int = 1, tcg_multiplier: float = 3.0) -> None:
        """``accel``: kvm, tcg or auto (KVM when proven); ``warm``: VMs restored ahead of time per image;
        ``tcg_multiplier``: test timeouts × this under TCG (Settings: IMAGECI_QEMU_ACCEL, _WARM_VMS,
        _TCG_MULTIPLIER)."""
        self.vm_cache = home / "vm"
        self.rootfs_cache = rootfs_cache
        self.workroot = home / "tmp" / "vms"
        self.cpus = cpus
        self.boot_timeout = boot_timeout
        self.snapshot = snapshot
        self.accel_cache = AccelCache(home / "host-probes.json")
        self._accel = accel or "auto"
        self.tcg_multiplier = tcg_multiplier
        self._lock = threading.RLock()  # template() boots while holding it and re-enters
        self._templates: dict[tuple[str, Shape], Template] = {}
        self._run_dir: Path | None = None
        self._key: Path | None = None
        self.last_boot: dict[str, float] = {}
        self.cold_boots = 0
        self.cost = Cost(memory_mb=DEFAULT_SHAPE.memory_mb + 256, cpus=float(cpus))
        self.keep_warm = keep_warm  # keep templates across engine runs until shutdown()
        # VMs restored ahead of time per image, so a test rarely waits for a restore
        self.warm = warm
        self._warm: dict[tuple[str, Shape], list[tuple[Vm, SshTestbed, Path]]] = {}
        self._filling = 0
        self._stopping = False
        self.warm_made = 0
        self.warm_hits = 0
        self._archive: dict[str, socket.socket] = {}  # image digest → the host-side proxy listener

    # -- host and image ------------------------------------------------------------
    def accel(self, architecture: str | None = None) -> str:
        """KVM only for guests of this host's architecture, and only when proven to work."""
        if architecture is not None and architecture != host_architecture():
            return "tcg"
        if self._accel in ("kvm", "tcg"):
            return self._accel
        return "kvm" if self.accel_cache.get().kvm else "tcg"

    def timeout_multiplier(self, architecture: str | None = None) -> float:
        return 1.0 if self.accel(architecture) == "kvm" else self.tcg_multiplier

    def why_not(self, image: ImageHandle) -> str | None:
        spec = vm_arch(image.architecture)
        if spec is None:
            return f"imageci does not know how to boot {image.architecture} guests"
        if qemu_binary(image.architecture) is None:
            return f"{spec.binary} is not installed (apt-get install qemu-system for {image.architecture} guests)"
        root = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
        if find_kernel(root) is None:
            return "the image has no kernel (/boot/vmlinuz-* and initrd.img-*): it cannot boot as a VM"
        return None

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        caps = {ROOT, REVERT, ISOLATION_MACHINE, ISOLATION_CONTAINER, PRIVILEGED, LIMITS, ARCHIVE,
                f"arch:{image.architecture}"}
        if self.accel(image.architecture) == "kvm":
            caps.add("kvm")
        return frozenset(caps)

    def _run_state(self) -> tuple[Path, Path]:
        with self._lock:
            if self._run_dir is None:
                self.workroot.mkdir(parents=True, exist_ok=True)
                token = process_owner(self.workroot.parent).token
                self._run_dir = Path(tempfile.mkdtemp(dir=self.workroot, prefix=f"run-{token}-"))
                key = self._run_dir / "id_ed25519"
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "imageci-run", "-f", str(key)],
                               check=True, capture_output=True)
                self._key = key
            assert self._key is not None
            return self._run_dir, self._key

    def assets(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> VmAssets:
        root = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
        return vm_assets(root, image.digest, self.vm_cache, free_space=shape.disk)

    def archive_port(self, image: ImageHandle) -> int:
        """Every VM of an image (its template too, so snapshots restore) can reach the archive
        proxy at 10.0.2.100:3142; apt is pointed at it only in testbeds made for ``archive``."""
        with self._lock:
            sock = self._archive.get(image.digest)
            if sock is None:
                root = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
                sock = host_listener()
                proxy().serve(sock, archive_hosts(root))
                self._archive[image.digest] = sock
            return int(sock.getsockname()[1])

    def new_vm(self, image: ImageHandle, disk: Path, workdir: Path, accel: str | None = None,
               shape: Shape = DEFAULT_SHAPE) -> Vm:
        qemu, spec = qemu_binary(image.architecture), vm_arch(image.architecture)
        if qemu is None or spec is None:
            raise HostSetupError(f"qemu for {image.architecture} guests is not installed: run scripts/host-setup.sh")
        _, key = self._run_state()
        return Vm(qemu, spec, self.assets(image, shape), disk, workdir, key, accel or self.accel(image.architecture),
                  shape.memory_mb, self.cpus, archive_port=self.archive_port(image))

    def overlay(self, backing: Path, path: Path) -> Path:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(backing), "-F", "qcow2", str(path)],
                       check=True, capture_output=True)
        return path

    def boot_timeout_for(self, accel: str) -> float:
        if self.boot_timeout:
            return self.boot_timeout
        return 90.0 if accel == "kvm" else 300.0

    def cold_boot(self, image: ImageHandle, workdir: Path,
                  shape: Shape = DEFAULT_SHAPE) -> tuple[Vm, SshTestbed]:
        """Boot from the base disk into a fresh overlay; demote KVM if it cannot boot the guest."""
        accel = self.accel(image.architecture)
        disk = self.overlay(self.assets(image, shape).disk, workdir / "disk.qcow2")
        vm = self.new_vm(image, disk, workdir, accel, shape)
        started = time.monotonic()
        vm.start()
        try:
            ssh = wait_ready(vm, self.boot_timeout_for(accel))
        except BootError as exc:
            vm.stop()
            if accel != "kvm" or self._accel == "kvm":
                raise
            # KVM passed the probe but cannot boot this guest (nested KVM): remember, use TCG.
            self.accel_cache.record(AccelProbe(False, f"a guest hung or crashed at boot under KVM: "
                                                      f"{str(exc).splitlines()[0]}", time.time(), "boot"))
            disk.unlink(missing_ok=True)
            return self.cold_boot(image, workdir, shape)
        self.last_boot[image.digest] = time.monotonic() - started
        self.cold_boots += 1  # boots that reached readiness
        return vm, ssh

    def template(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> Template:
        key = (image.digest, shape)
        with self._lock:
            existing = self._templates.get(key)
        if existing:
            return existing
        run_dir, _ = self._run_state()
        with self._lock:
            if key in self._templates:
                return self._templates[key]
            # a short name: qemu's QMP socket path inside must stay under 108 bytes
            tdir = run_dir / f"t{len(self._templates)}-{image.digest[:8]}"
            tdir.mkdir(exist_ok=True)
            started = time.monotonic()
            vm, ssh = self.cold_boot(image, tdir, shape)
            try:
                ssh.close()
                vm.save_state(tdir / "state")
            finally:
                vm.stop()
            t = Template(tdir / "disk.qcow2", tdir / "state", time.monotonic() - started)
            self._templates[key] = t
            return t

    def restore(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> tuple[Vm, SshTestbed, Path]:
        """A fresh VM from the image's snapshot, ready for SSH."""
        t = self.template(image, shape)
        run_dir, _ = self._run_state()
        vdir = Path(tempfile.mkdtemp(dir=run_dir, prefix="vm-"))
        vm = None
        try:
            disk = self.overlay(t.disk, vdir / "disk.qcow2")
            vm = self.new_vm(image, disk, vdir, shape=shape)
            vm.start(incoming=t.state)
            vm.resume_incoming()
            return vm, wait_ready(vm, 60 * self.timeout_multiplier(image.architecture),
                                  want_system_state=False), vdir
        except BaseException:
            if vm is not None:
                vm.stop()
            safe_rmtree(vdir)
            raise

    def take_warm(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> tuple[Vm, SshTestbed, Path] | None:
        """A VM restored ahead of time, if one is waiting; asks for the next one to be made."""
        if self.warm <= 0:
            return None
        key = (image.digest, shape)
        with self._lock:
            ready = self._warm.setdefault(key, [])
            got = ready.pop(0) if ready else None
            self.warm_hits += got is not None
        self._refill(image, shape)
        return got

    def _refill(self, image: ImageHandle, shape: Shape) -> None:
        key = (image.digest, shape)

        def fill() -> None:
            try:
                while True:
                    with self._lock:
                        if self._stopping or len(self._warm.get(key, [])) + self._filling > self.warm:
                            return
                    made = self.restore(image, shape)
                    with self._lock:
                        if self._stopping:
                            made[0].stop()
                            safe_rmtree(made[2])
                            return
                        self._warm.setdefault(key, []).append(made)
                        self.warm_made += 1
            except Exception:  # noqa: BLE001 — a failed warm-up only costs the next test a restore
                return
            finally:
                with self._lock:
                    self._filling -= 1

        with self._lock:
            if self._stopping or len(self._warm.get(key, [])) + self._filling >= self.warm:
                return
            self._filling += 1
        threading.Thread(target=fill, name="imageci-warm-vm", daemon=True).start()

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(),
               limits: Limits = DEFAULTS) -> QemuTestbed:
        return QemuTestbed(self, image, limits, archive=access(needs) == ARCHIVE)

    def finish(self) -> None:
        """The engine calls this when a run is over."""
        if not self.keep_warm:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop warm VMs; remove this run's templates and key."""
        with self._lock:
            self._stopping = True
            warm = [w for ws in self._warm.values() for w in ws]
            self._warm = {}
        for vm, _ssh, vdir in warm:
            vm.stop()
            safe_rmtree(vdir)
        deadline = time.monotonic() + 120
        while self._filling and time.monotonic() < deadline:  # let a restore in flight finish and stop
            time.sleep(0.1)
        with self._lock:
            self._stopping = False
            for sock in self._archive.values():
                proxy().stop(sock)
            self._archive = {}
            if self._run_dir is not None:
                safe_rmtree(self._run_dir)
            self._run_dir, self._key, self._templates = None, None, {}


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
            if self.backend.snapshot:
                warm = self.backend.take_warm(self.image, self.shape)
                if warm is None:
                    warm = self.backend.restore(self.image, self.shape)
                self.vm, self.ssh, self.dir = warm
                self.restored = True
            else:
                run_dir, _ = self.backend._run_state()
                self.dir = Path(tempfile.mkdtemp(dir=run_dir, prefix="vm-"))
                self.vm, self.ssh = self.backend.cold_boot(self.image, self.dir, self.shape)
            self.ssh.limits = self.limits  # the output limit applies to the test's commands
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
        try:
            return self.vm.console.stat().st_size if self.vm is not None else 0
        except OSError:
            return 0

    def _explain(self, console_at: int, check_disk: bool) -> None:
        """After a failed command: did the VM's kernel kill for memory, or is its disk full?"""
        notes = []
        if self.vm is not None:
            try:
                with self.vm.console.open("rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    fh.seek(max(console_at, fh.tell() - (1 << 20)))  # what the guest said since, at most 1 MiB
                    said = fh.read(1 << 20).decode("utf-8", "replace")
            except OSError:
                said = ""
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

    def revert(self) -> None:
        self.close()
        self.open()

    def close(self) -> None:
        if self.vm is not None:
            self.vm.stop()
            self.vm = None
        self.ssh = None
        if self.dir is not None:
            safe_rmtree(self.dir)
            self.dir = None
