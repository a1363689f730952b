"""Making VMs for the qemu backend: the accelerator (KVM only when proven,
demoted when a real boot hangs under it), this run's SSH key and directory,
disk assets and overlays, the archive proxy a VM can reach, and a cold boot to
readiness. One VM process is ``vm.Vm``; snapshots and warm VMs are
``vmpool.SnapshotPool``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from imageci.errors import HostSetupError, TestbedError, UsageError
from imageci.formats.qcow2 import check_qcow2
from imageci.formats.rootfs import unpacked_rootfs
from imageci.formats.vmdisk import VmAssets, vm_assets
from imageci.fs import safe_rmtree
from imageci.hostarch import host_architecture
from imageci.owners import process_owner
from imageci.testbeds.archive import archive_hosts, host_listener, proxy
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.ssh import SshTestbed
from imageci.testbeds.vm.accel import AccelCache, AccelProbe, qemu_binary, vm_arch
from imageci.testbeds.vm.cloudseed import Seed, make_seed
from imageci.testbeds.vm.guestdns import GuestDns
from imageci.testbeds.vm.process import DEFAULT_SHAPE, LOGIN_GRACE_S, BootError, Shape, Vm, ovmf_files, wait_ready
from imageci.testbeds.vm.vmtemplates import (
    BASE,
    DISK,
    KEY,
    KeptTemplates,
    link_or_copy,
    template_name,
)


def _size_and_mtime(path: Path) -> list[int]:
    """What a replaced binary or firmware file changes (a template booted with another must not be restored)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class VmMaker:
    def __init__(self, home: Path, rootfs_cache: Path, *, cpus: int = 1, boot_timeout: float | None = None,
                 accel: str | None = None, tcg_multiplier: float = 3.0, kernel_args: str = "",
                 firmware: str = "auto", login_grace: float = LOGIN_GRACE_S) -> None:
        self.vm_cache = home / "vm"
        self.templates = KeptTemplates(home / "vm-templates")
        self.login_grace = login_grace  # after its login prompt, how long a booting guest has to answer SSH
        self.rootfs_cache = rootfs_cache
        self.workroot = home / "tmp" / "vms"
        self.cpus = cpus
        self.boot_timeout = boot_timeout
        self.accel_cache = AccelCache(home / "host-probes.json")
        self._accel = accel or "auto"
        self.tcg_multiplier = tcg_multiplier
        self.kernel_args = kernel_args  # appended to every VM's kernel command line
        self.firmware_choice = firmware  # auto (the disk's first), uefi or bios: how disk images boot
        self._seed: Seed | None = None
        self._sound_disks: set[str] = set()  # disk images qemu-img check found sound
        self._dns: GuestDns | None = None
        self._lock = threading.RLock()
        self._run_dir: Path | None = None
        self._key: Path | None = None
        self._archive: dict[str, socket.socket] = {}  # image digest → the host-side proxy listener
        self.last_boot: dict[str, float] = {}
        self.cold_boots = 0

    def accel(self, architecture: str | None = None) -> str:
        """KVM only for guests of this host's architecture, and only when proven to work."""
        if architecture is not None and architecture != host_architecture():
            return "tcg"
        if self._accel in ("kvm", "tcg"):
            return self._accel
        return "kvm" if self.accel_cache.get().kvm else "tcg"

    def timeout_multiplier(self, architecture: str | None = None) -> float:
        return 1.0 if self.accel(architecture) == "kvm" else self.tcg_multiplier

    def run_state(self) -> tuple[Path, Path]:
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

    def seed(self) -> Seed:
        """This run's cloud-init NoCloud seed (its SSH key, an instance id)."""
        with self._lock:
            if self._seed is None:
                run_dir, key = self.run_state()
                self._seed = make_seed(run_dir, key.with_suffix(".pub").read_text().strip(), run_dir.name)
            return self._seed

    def identity(self, image: ImageHandle, directory: Path) -> tuple[Path, Seed | None]:
        """A key of its own (and, for a disk image, a seed that authorises it) for a template made in
        ``directory``: a template kept for later processes holds what its guest was told."""
        key = directory / KEY
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "imageci-template", "-f", str(key)],
                       check=True, capture_output=True)
        if self.firmware(image) is None:
            return key, None
        return key, make_seed(directory, key.with_suffix(".pub").read_text().strip(), directory.name)

    def template_name(self, image: ImageHandle, shape: Shape) -> str:
        """The kept template's name: everything a restore of it must match."""
        qemu, firmware, accel = qemu_binary(image.architecture), self.firmware(image), self.accel(image.architecture)
        arch = vm_arch(image.architecture)
        parts: dict[str, object] = {
            "image": image.digest, "memory_mb": shape.memory_mb, "disk": shape.disk, "cpus": self.cpus,
            "firmware": firmware, "accel": accel, "kernel_args": self.kernel_args,
            "cpu": arch.cpu(accel) if arch else None,  # a guest saved under one CPU model resumes under no other
            "qemu": [qemu, *_size_and_mtime(Path(qemu))] if qemu else None}
        if firmware == "uefi":
            parts["ovmf"] = _size_and_mtime(ovmf_files()[0])
        return template_name(parts)

    def dns_port(self) -> int:
        """The guest name server's port (started with the first VM of the run)."""
        with self._lock:
            if self._dns is None:
                self._dns = GuestDns()
            return self._dns.port

    def firmware(self, image: ImageHandle) -> str | None:
        """How this maker boots ``image``: None (direct kernel boot) for a rootfs, else its firmware."""
        if image.disk is None:
            return None
        if self.firmware_choice != "auto":
            return self.firmware_choice
        return image.firmware[0] if image.firmware else "uefi"

    def assets(self, image: ImageHandle, shape: Shape = DEFAULT_SHAPE) -> VmAssets:
        if image.disk is not None:
            self._check_disk(image)
            return VmAssets(image.disk, None, None)
        root = unpacked_rootfs(image.rootfs_tar, image.digest, self.rootfs_cache)
        return vm_assets(root, image.digest, self.vm_cache, free_space=shape.disk)

    def _check_disk(self, image: ImageHandle) -> None:
        """A disk image is checked (``qemu-img check``, no backing file) before its first boot: a
        damaged or hostile one is a testbed error, whatever let it into the store."""
        assert image.disk is not None
        with self._lock:
            if image.digest in self._sound_disks:
                return
        try:
            check_qcow2(image.disk)
        except UsageError as exc:
            raise TestbedError(f"the disk image cannot be booted: {exc}") from None
        with self._lock:
            self._sound_disks.add(image.digest)

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
               shape: Shape = DEFAULT_SHAPE, uefi_vars: Path | None = None,
               identity: tuple[Path, Seed | None] | None = None) -> Vm:
        """A VM of ``image`` on ``disk``; ``uefi_vars``: the variable store it starts from (a snapshot's);
        ``identity``: the key and seed its guest was (or is) told (a template's; default: this run's)."""
        qemu, spec = qemu_binary(image.architecture), vm_arch(image.architecture)
        if qemu is None or spec is None:
            raise HostSetupError(f"qemu for {image.architecture} guests is not installed: run scripts/host-setup.sh")
        firmware = self.firmware(image)
        if identity is None:
            identity = self.run_state()[1], self.seed() if firmware is not None else None
        key, seed = identity
        vm = Vm(qemu, spec, self.assets(image, shape), disk, workdir, key, accel or self.accel(image.architecture),
                shape.memory_mb, self.cpus, archive_port=self.archive_port(image), kernel_args=self.kernel_args,
                firmware=firmware, seed=seed.path if seed is not None else None, dns_port=self.dns_port(),
                told=seed.facts() if seed is not None else None)
        if uefi_vars is not None and firmware == "uefi":
            shutil.copyfile(uefi_vars, vm.uefi_vars)
        return vm

    def overlay(self, backing: Path, path: Path, grow: int = 0) -> Path:
        """A qcow2 overlay on ``backing``, ``grow`` bytes bigger than it (a disk image's root can grow into
        them: cloud-init's growpart). A ``backing`` in ``path``'s directory is named relative to it (the
        directory can move: a kept template)."""
        size = []
        if grow:
            info = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", str(backing)],
                                  check=True, capture_output=True, text=True).stdout
            size = [str(int(json.loads(info)["virtual-size"]) + grow)]
        name = backing.name if backing.parent == path.parent else str(backing)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", name, "-F", "qcow2", str(path),
                        *size], check=True, capture_output=True)
        return path

    def boot_timeout_for(self, accel: str) -> float:
        if self.boot_timeout:
            return self.boot_timeout
        return 90.0 if accel == "kvm" else 300.0

    def cold_boot(self, image: ImageHandle, workdir: Path, shape: Shape = DEFAULT_SHAPE,
                  identity: tuple[Path, Seed | None] | None = None) -> tuple[Vm, SshTestbed]:
        """Boot from the base disk into a fresh overlay; demote KVM if it cannot boot the guest. With an
        ``identity`` (a template's), the base disk is linked into ``workdir`` too: the template is whole."""
        accel = self.accel(image.architecture)
        base = self.assets(image, shape).disk
        if identity is not None:
            link_or_copy(base, workdir / BASE)
            base = workdir / BASE
        disk = self.overlay(base, workdir / DISK, grow=shape.disk if image.disk is not None else 0)
        vm = self.new_vm(image, disk, workdir, accel, shape, identity=identity)
        started = time.monotonic()
        try:
            vm.start()
            ssh = wait_ready(vm, self.boot_timeout_for(accel), login_grace=self.login_grace)
        except BaseException as exc:
            vm.stop()
            if not isinstance(exc, BootError):
                raise
            if accel != "kvm" or self._accel == "kvm":
                raise
            # KVM passed the probe but cannot boot this guest (nested KVM): remember, use TCG.
            self.accel_cache.record(AccelProbe(False, f"a guest hung or crashed at boot under KVM: "
                                                      f"{str(exc).splitlines()[0]}", time.time(), "boot"))
            disk.unlink(missing_ok=True)
            (workdir / BASE).unlink(missing_ok=True)
            return self.cold_boot(image, workdir, shape, identity)
        self.last_boot[image.digest] = time.monotonic() - started
        self.cold_boots += 1  # boots that reached readiness
        return vm, ssh

    def shutdown(self) -> None:
        """Stop the archive proxies; remove this run's directory and key."""
        with self._lock:
            for sock in self._archive.values():
                proxy().stop(sock)
            self._archive = {}
            if self._run_dir is not None:
                safe_rmtree(self._run_dir)
            self._run_dir, self._key, self._seed = None, None, None
            if self._dns is not None:
                self._dns.close()
                self._dns = None
