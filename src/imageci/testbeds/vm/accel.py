"""Which qemu accelerator this host can really use.

/dev/kvm existing is not proof: nested KVM guests can hang at early boot. The
probe actually boots something under KVM — an 8-byte firmware that starts the
x87 unit as every firmware and kernel does (``fwait; fninit``: some nested KVM
hosts cannot emulate it and stop the guest with "KVM internal error") and then
writes to qemu's debug-exit port — and only trusts KVM when qemu exits with the
code that program chose. qemu's own complaint ends the probe at once. A full
guest boot that still hangs under KVM demotes KVM for this host too
(``record``; a guest KVM stops is seen at once by ``kvm_stopped``). Results are
cached in the imageci home.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from imageci.hostarch import host_architecture

PROBE_EXIT = 0x31  # qemu exits with (value << 1) | 1
CACHE_SECONDS = 7 * 24 * 3600
KVM_STOPPED = re.compile(r"KVM internal error[^\n]*|kvm run failed[^\n]*")  # qemu's words when KVM stops a guest


@dataclass(frozen=True)
class AccelProbe:
    kvm: bool
    why: str
    checked: float
    source: str = "probe"  # "probe": the 5-instruction guest; "boot": a real guest boot


def _firmware(path: Path) -> None:
    """64 KiB BIOS image whose reset vector runs: fwait; fninit; mov al,0x31; out 0xf4,al; hlt."""
    image = bytearray(b"\xf4" * 0x10000)
    image[0xFFF0:0xFFF8] = bytes([0x9B, 0xDB, 0xE3, 0xB0, PROBE_EXIT, 0xE6, 0xF4, 0xF4])
    path.write_bytes(bytes(image))


def kvm_stopped(qemu_stderr: str) -> str | None:
    """What qemu said when KVM stopped its guest (it stays paused, never exits), if it did."""
    found = KVM_STOPPED.search(qemu_stderr)
    return found.group(0).strip() if found else None


def _run_probe(argv: list[str], err: Path, timeout: float) -> int | str:
    """The probe's exit code, or why it never exited: KVM stopped it, or it ran past ``timeout``."""
    with err.open("wb") as fh:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh)
    deadline = time.monotonic() + timeout
    try:
        while (code := proc.poll()) is None:
            stopped = kvm_stopped(err.read_text("utf-8", "replace"))
            if stopped is not None:
                return f"KVM stopped a probe guest: {stopped}"
            if time.monotonic() > deadline:
                return f"a guest under KVM did not finish an 8-instruction boot in {timeout:.0f}s"
            time.sleep(0.02)
        return code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class VmArch:
    """How qemu boots a guest of one Debian architecture."""

    binary: str
    machine: str
    console: str  # the kernel's serial console device
    tcg_cpu: str = "max"  # the CPU qemu emulates under TCG (under KVM: "max", the host's own)

    def cpu(self, accel: str) -> str:
        return self.tcg_cpu if accel == "tcg" else "max"


VM_ARCHES = {
    "amd64": VmArch("qemu-system-x86_64", "q35", "ttyS0"),
    "i386": VmArch("qemu-system-i386", "q35", "ttyS0"),
    # pointer authentication by an implementation-defined algorithm instead of the architected QARMA5, which
    # TCG computes slowly (every signed return in Debian's kernel): still checked, cold boot 93 → 37 s here
    "arm64": VmArch("qemu-system-aarch64", "virt", "ttyAMA0", "max,pauth-impdef=on"),
    "armhf": VmArch("qemu-system-arm", "virt", "ttyAMA0"),
    "ppc64el": VmArch("qemu-system-ppc64", "pseries", "hvc0"),
    "riscv64": VmArch("qemu-system-riscv64", "virt", "ttyS0"),
    "s390x": VmArch("qemu-system-s390x", "s390-ccw-virtio", "ttysclp0"),
}

def vm_arch(arch: str) -> VmArch | None:
    return VM_ARCHES.get(arch)


def qemu_binary(arch: str = "amd64") -> str | None:
    spec = vm_arch(arch)
    return shutil.which(spec.binary) if spec else None


def probe_kvm(timeout: float = 10) -> AccelProbe:
    now = time.time()
    if not os.path.exists("/dev/kvm"):
        return AccelProbe(False, "/dev/kvm does not exist", now)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelProbe(False, "/dev/kvm is not accessible to this user", now)
    if host_architecture() not in ("amd64", "i386"):
        return AccelProbe(False, f"the KVM probe knows x86 hosts only (this is {host_architecture()})", now)
    qemu = qemu_binary(host_architecture())
    if qemu is None:
        return AccelProbe(False, "qemu-system-x86_64 is not installed", now)
    with tempfile.TemporaryDirectory() as tmp:
        fw = Path(tmp) / "probe.bin"
        _firmware(fw)
        argv = [qemu, "-machine", "pc,accel=kvm", "-bios", str(fw), "-display", "none", "-nodefaults",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-serial", "none", "-monitor", "none"]
        code = _run_probe(argv, Path(tmp) / "qemu.err", timeout)
        said = (Path(tmp) / "qemu.err").read_text("utf-8", "replace").strip().splitlines()
    if isinstance(code, str):
        return AccelProbe(False, code, now)
    if code == (PROBE_EXIT << 1) | 1:
        return AccelProbe(True, "a probe guest booted under KVM", now)
    return AccelProbe(False, f"KVM probe failed: {said[-1] if said else f'exit {code}'}", now)


class AccelCache:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def get(self, refresh: bool = False) -> AccelProbe:
        doc = self._read().get("kvm")
        if isinstance(doc, dict) and time.time() - float(doc.get("checked", 0)) < CACHE_SECONDS:
            cached = AccelProbe(bool(doc.get("kvm")), str(doc.get("why", "")), float(doc.get("checked", 0)),
                                str(doc.get("source", "probe")))
            # a tiny probe cannot overrule a real guest that failed to boot under KVM
            if not refresh or (cached.source == "boot" and not cached.kvm):
                return cached
        probe = probe_kvm()
        self.record(probe)
        return probe

    def record(self, probe: AccelProbe) -> None:
        data = self._read()
        data["kvm"] = {"kvm": probe.kvm, "why": probe.why, "checked": probe.checked, "source": probe.source}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)
