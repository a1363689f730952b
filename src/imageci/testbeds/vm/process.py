"""One qemu process: a VM started (or restored from a snapshot), saved, stopped,
and waited for until SSH answers — the pieces the qemu backend is made of.

A VM's shape is what a test's limits make of it: RAM (``memory``) and the free
space of its root filesystem (``disk``).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from imageci.definitions.limits import DEFAULTS, Limits
from imageci.errors import HostSetupError, TestbedError
from imageci.formats.vmdisk import VmAssets
from imageci.testbeds import relay
from imageci.testbeds.archive import GUEST_ADDRESS
from imageci.testbeds.archive import PORT as ARCHIVE_PORT
from imageci.testbeds.base import CloudSeed
from imageci.testbeds.names import PROVIDE_SCRIPT
from imageci.testbeds.ssh import HostConfig, SshTestbed
from imageci.testbeds.vm.accel import VmArch, kvm_stopped
from imageci.testbeds.vm.cloudseed import MAC
from imageci.testbeds.vm.qmp import Qmp, QmpError
from imageci.testbeds.vm.vmconsole import console_tail, guard_console

# SeaBIOS with nothing bootable; OVMF giving up on the disks (falling back to network boot, which these VMs
# never use; its shell)
NOTHING_TO_BOOT = re.compile(r"No bootable device|No bootable option or device|>>Start (PXE|HTTP Boot) over IPv"
                             r"|UEFI Interactive Shell|Shell> ")
LOGIN_PROMPT = re.compile(r"(?m)^\S+ login: ")  # getty: "<hostname> login: "
LOGIN_GRACE_S = 90.0  # after the guest's login prompt, SSH should already answer
OVMF = (Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/usr/share/OVMF/OVMF_VARS_4M.fd"))


def ovmf_files() -> tuple[Path, Path]:
    """OVMF's code (read-only) and the variable store a VM copies."""
    if not all(p.is_file() for p in OVMF):
        raise HostSetupError("OVMF (UEFI firmware for qemu) is not installed: run scripts/host-setup.sh "
                             "(apt-get install ovmf)")
    return OVMF


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BootError(TestbedError):
    """The VM did not become ready; carries the console log."""

    def __init__(self, message: str, console: str) -> None:
        super().__init__(f"{message}\n--- console (last lines) ---\n{console}")
        self.log = console.encode()


@dataclass(frozen=True)
class Shape:
    """What a test's VM is made of: RAM and free disk space."""

    memory_mb: int
    disk: int  # bytes of free space in the guest's root filesystem

    @classmethod
    def of(cls, limits: Limits) -> Shape:
        full = limits.over(DEFAULTS)
        assert full.memory is not None and full.disk is not None
        return cls(max(256, full.memory >> 20), full.disk)


DEFAULT_SHAPE = Shape.of(DEFAULTS)


@dataclass
class Vm:
    """One qemu process."""

    qemu: str
    arch: VmArch
    assets: VmAssets
    disk: Path
    workdir: Path
    key: Path
    accel: str
    memory_mb: int = 1024
    cpus: int = 1
    port: int = field(default_factory=_free_port)
    archive_port: int | None = None  # the host's archive proxy listener, reached at 10.0.2.100:3142
    dns_port: int | None = None  # the host's guest name server (testbeds.guestdns), reached at 10.0.2.100:53
    kernel_args: str = ""  # appended to the kernel command line
    firmware: str | None = None  # "uefi" (OVMF) or "bios" (SeaBIOS) boot the disk; None: direct kernel boot
    seed: Path | None = None  # the cloud-init NoCloud seed a disk image boots with (testbeds.cloudseed)
    told: CloudSeed | None = None  # what that seed told the guest (for the checks that hold it to it)
    proc: subprocess.Popen[bytes] | None = None
    parent: int = 0  # the process that started qemu (a holder forked from it is not its parent)

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def qmp_path(self) -> Path:
        return self.workdir / "qmp.sock"

    @property
    def firmware_log(self) -> Path:
        """What the firmware wrote to qemu's debug console (port 0x402)."""
        return self.workdir / "firmware.log"

    @property
    def uefi_vars(self) -> Path:
        """This VM's UEFI variable store (a copy of OVMF's, or of the snapshot's it was restored from)."""
        return self.workdir / "OVMF_VARS.fd"

    def console_size(self) -> int:
        try:
            return self.console.stat().st_size
        except OSError:
            return 0

    def never_boots(self) -> str | None:
        """Why this VM will never boot: its firmware found nothing to boot, or KVM stopped it."""
        stopped = kvm_stopped(console_tail(self.workdir / "qemu.err", 4000)) if self.accel == "kvm" else None
        if stopped is not None:
            return f"KVM stopped the guest ({stopped}): this host cannot run it under KVM"
        return self.nothing_to_boot()

    def nothing_to_boot(self) -> str | None:
        """Why this VM will never boot, when its firmware said it found nothing to boot."""
        if self.firmware is None:
            return None
        said = console_tail(self.console, 2000) + console_tail(self.firmware_log, 2000)
        if NOTHING_TO_BOOT.search(said):
            return f"the firmware ({self.firmware}) found nothing to boot on the disk: no boot loader it can start"
        return None

    def boot_log(self) -> str:
        """The console's tail; when the guest wrote nothing there, what the firmware said."""
        text = console_tail(self.console)
        if text.strip() or self.firmware is None:
            return text
        firmware = console_tail(self.firmware_log, 1500).strip()
        said = f"--- firmware ({self.firmware}) ---\n{firmware}" if firmware else "(and the firmware said nothing)"
        return "(nothing on the serial console: no bootloader or kernel started)\n" + said

    def reboot_resets(self, on: bool) -> None:
        """What a guest's reboot does to this qemu: reset the machine (``on``: it boots again through its
        firmware) or end the process (``-no-reboot``, the default: a crash that reboots is seen)."""
        q = self.qmp()
        try:
            q.command("set-action", reboot="reset" if on else "shutdown")
        finally:
            q.close()

    def _boot_args(self) -> list[str]:
        if self.firmware is None:
            assert self.assets.kernel is not None and self.assets.initrd is not None
            pub = base64.b64encode(self.key.with_suffix(".pub").read_bytes().strip()).decode()
            return ["-kernel", str(self.assets.kernel), "-initrd", str(self.assets.initrd),
                    "-append", f"root=/dev/vda rw console={self.arch.console} panic=-1 imageci.ssh_key={pub}"
                               + (f" {self.kernel_args}" if self.kernel_args else "")]
        argv = ["-chardev", f"file,id=fw,path={self.firmware_log}", "-device", "isa-debugcon,iobase=0x402,chardev=fw"]
        if self.firmware == "uefi":
            code, template = ovmf_files()
            if not self.uefi_vars.exists():
                shutil.copyfile(template, self.uefi_vars)
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={self.uefi_vars}"]
        else:
            argv += ["-boot", "strict=on,reboot-timeout=1000"]  # nothing to boot: SeaBIOS reboots, qemu exits
        return argv

    def _drives(self) -> list[str]:
        # The image's disk first: SeaBIOS boots the first disk only, and the guest sees it as vda.
        argv = ["-drive", f"file={self.disk},if=virtio,format=qcow2,cache=unsafe"]
        if self.seed is not None:
            argv += ["-drive", f"file={self.seed},if=virtio,format=raw,readonly=on"]
        return argv

    def start(self, incoming: Path | None = None) -> None:
        argv = [self.qemu, "-machine", f"{self.arch.machine},accel={self.accel}", "-cpu", self.arch.cpu(self.accel),
                "-m", str(self.memory_mb),
                "-smp", str(self.cpus), "-display", "none", "-monitor", "none", "-nodefaults", "-no-user-config",
                "-serial", f"file:{self.console}", *self._boot_args(), *self._drives(),
                "-netdev", f"user,id=n0,restrict=on,ipv6=off,hostfwd=tcp:127.0.0.1:{self.port}-:22{self._guestfwd()}",
                "-device", f"virtio-net-pci,netdev=n0,mac={MAC},romfile=", "-device", "virtio-rng-pci",
                # the guest hands its free memory back (free page reporting): a template's saved state leaves it
                # out (326 → 208 MB for the example VM), so every restore loads less; a VM holds less of the host
                "-device", "virtio-balloon-pci,free-page-reporting=on",
                "-qmp", f"unix:{self.qmp_path.name},server=on,wait=off", "-no-reboot"]  # in cwd: see Qmp
        state = None
        if incoming is not None:  # qemu reads the saved state from the file itself: no `cat` and pipe between
            state = os.open(incoming, os.O_RDONLY | os.O_CLOEXEC)
            argv += ["-incoming", f"fd:{state}"]
        try:
            with open(self.workdir / "qemu.err", "wb") as err:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                             start_new_session=True, cwd=self.workdir,
                                             pass_fds=() if state is None else (state,))
        finally:
            if state is not None:
                os.close(state)
        self.parent = os.getpid()
        guard_console(self.console, self.alive)
        if self.firmware is not None:
            guard_console(self.firmware_log, self.alive)

    def _guestfwd(self) -> str:
        rules = ""
        for guest_port, host_port in ((ARCHIVE_PORT, self.archive_port), (53, self.dns_port)):
            if host_port is not None:
                cmd = f"{sys.executable} -I -S {relay.__file__} {host_port}"
                rules += f",guestfwd=tcp:{GUEST_ADDRESS}:{guest_port}-cmd:{cmd.replace(',', ',,')}"
        return rules

    def alive(self) -> bool:
        if self.proc is None:
            return False
        if os.getpid() == self.parent:
            return self.proc.poll() is None
        return _running_qemu(self.proc.pid)  # not our child: waitpid cannot tell, the kernel can

    def qmp(self) -> Qmp:
        deadline = time.monotonic() + 30
        while True:
            try:
                return Qmp(self.qmp_path)
            except OSError:
                if not self.alive() or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def resume_incoming(self, timeout: float = 120) -> None:
        q = self.qmp()
        try:
            deadline = time.monotonic() + timeout
            while q.command("query-status")["status"] == "inmigrate":
                if time.monotonic() > deadline:
                    raise TestbedError("restoring the VM snapshot did not finish")
                time.sleep(0.02)
            q.command("cont")
        finally:
            q.close()

    def save_state(self, path: Path, timeout: float = 300) -> None:
        q = self.qmp()
        try:
            q.command("stop")
            q.command("migrate", uri=f"exec:cat > {shlex.quote(str(path))}")
            deadline = time.monotonic() + timeout
            while True:
                status = q.command("query-migrate").get("status")
                if status == "completed":
                    break
                if status == "failed" or time.monotonic() > deadline:
                    raise TestbedError(f"saving the VM snapshot failed ({status})")
                time.sleep(0.05)
        finally:
            q.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.alive():
            try:
                q = Qmp(self.qmp_path, timeout=5)
                q.command("quit")
                q.close()
            except (OSError, QmpError):
                pass
            deadline = time.monotonic() + 5
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.alive():
                os.killpg(self.proc.pid, 9)
            if os.getpid() == self.parent:
                self.proc.wait()
        self.proc = None


def _running_qemu(pid: int) -> bool:
    """Whether ``pid`` is a qemu still running (neither gone nor a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and b"qemu-system" in command


def _ssh_config(vm: Vm, workdir: Path) -> HostConfig:
    return HostConfig(host="127.0.0.1", port=vm.port, user="root", key=str(vm.key),
                      capabilities=[], known_hosts=str(workdir / "known_hosts"), connect_timeout=5)


def wait_ready(vm: Vm, timeout: float, want_system_state: bool = True,
               login_grace: float = LOGIN_GRACE_S, probe: bool = True) -> SshTestbed:
    """Poll until SSH answers (and systemd has finished starting), or fail with the console log —
    early when the VM shows it will never answer (its firmware found nothing to boot; it sits at its
    login prompt for ``login_grace`` seconds without SSH). ``probe=False``: the SSH connection is
    enough (a VM restored from a template that was ready; the caller's first command is the probe).
    With ``want_system_state`` the question to systemd is the probe: one session, not two."""
    # X25519 first: OpenSSH's default, its hybrid with Streamlined NTRU Prime, costs an emulated guest 0.15 s of
    # each connection, against attacks that a throwaway VM reached over the host's loopback does not face
    ssh = SshTestbed("qemu", _ssh_config(vm, vm.workdir), vm.workdir / "known_hosts", kex_first="curve25519-sha256")
    deadline = time.monotonic() + timeout
    login_at: float | None = None
    since = vm.console_size()  # a login prompt of an earlier boot (before a reboot) does not count
    while True:
        if not vm.alive():
            why = vm.never_boots() or "qemu exited before the VM was ready: " + console_tail(
                vm.workdir / "qemu.err", 500).strip()
            raise BootError(why, vm.boot_log())
        try:
            ssh.open(probe=probe and not want_system_state)
            if want_system_state:
                _system_started(vm, ssh, deadline)
            return ssh
        except BootError:
            ssh.close()
            raise
        except TestbedError:
            ssh.close()
            now = time.monotonic()
            if login_at is None and vm.console_size() > since and LOGIN_PROMPT.search(
                    console_tail(vm.console, min(400, vm.console_size() - since))):
                login_at = now
            hopeless = vm.never_boots()
            if hopeless is None and login_at is not None and now - login_at > login_grace:
                hopeless = (f"the guest reached its login prompt but SSH did not answer {login_grace:.0f}s later: "
                            "it has no address on the network (DHCP, cloud-init's network config), no sshd, "
                            "or the run's key was not installed")
            if hopeless is not None or now > deadline:
                raise BootError(hopeless or f"the VM did not answer on SSH within {timeout:.0f}s",
                                vm.boot_log()) from None
            time.sleep(0.5)


def provide_names(ssh: SshTestbed) -> None:
    """``/etc/hosts`` and ``/etc/hostname`` where the image has none: localhost resolves in the VM."""
    provided = ssh.exec(["sh", "-c", PROVIDE_SCRIPT], timeout=60)
    if provided.exit_code != 0:
        raise TestbedError(f"the VM's first command failed: {provided.stderr.decode(errors='replace')[-500:]}")


def _system_started(vm: Vm, ssh: SshTestbed, deadline: float) -> None:
    """Wait (over ``ssh``, its first session) until systemd has finished starting the guest; a session that
    fails raises TestbedError (the caller connects again)."""
    r = ssh.exec(["systemctl", "is-system-running", "--wait"], timeout=max(10.0, deadline - time.monotonic()))
    if r.timed_out:
        raise BootError("systemd did not finish starting", vm.boot_log())
