"""What this host can run, and why not: the facts behind `imageci doctor`."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imageci.errors import ImageciError
from imageci.hostarch import binfmt_architectures
from imageci.hosttools import find_tool
from imageci.testbeds import lxdclient
from imageci.testbeds.gpu import nvidia_gpus, why_no_gpu
from imageci.testbeds.limits import cgroup_mode
from imageci.testbeds.seccomp import filter_bytes
from imageci.testbeds.vm.accel import AccelCache, qemu_binary
from imageci.testbeds.vm.process import OVMF

# what disk images need on the host: building them, and the seed a booted one reads
DISK_TOOLS = (("mcopy", "mtools"), ("mkfs.fat", "dosfstools"), ("sfdisk", "fdisk"), ("grub-mkimage", "grub-common"))

@dataclass(frozen=True)
class Finding:
    area: str  # builder | sandbox | podman | qemu | ssh
    name: str
    ok: bool
    detail: str
    required: bool = False  # needed by the embedded defaults (build + sandbox)


def _version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text and out.returncode == 0 else None


def namespace_probe(bwrap: str) -> subprocess.CompletedProcess[str]:
    """``true`` in new namespaces under bubblewrap, on the host's ``/usr`` alone. (Not on ``/``: binding the whole
    tree copies every mount below it, and one unmounted on the host meanwhile — another run's sandbox ending —
    reaches that copy before bwrap remounts it read-only, which then fails, "No such file or directory": nothing
    this probe asks about.)"""
    argv = [bwrap, "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    return subprocess.run([*argv, "--unshare-pid", "--unshare-net", "true"], capture_output=True, text=True)


def check_host(home: Path, refresh: bool = True) -> list[Finding]:
    """What this host can run, one finding per part (``imageci doctor``)."""
    return [*_builder_and_sandbox(), *_podman(), *_qemu(home, refresh), *_others(home)]


def _builder_and_sandbox() -> list[Finding]:
    out: list[Finding] = []
    root = os.geteuid() == 0
    out.append(Finding("sandbox", "root", root, "running as root" if root else
                       "not root: the sandbox testbed mounts overlayfs and needs root", True))
    mm = _version(["mmdebstrap", "--version"])
    out.append(Finding("builder", "mmdebstrap", mm is not None, mm or "not installed: scripts/host-setup.sh", True))
    arches = binfmt_architectures()
    out.append(Finding("builder", "foreign architectures (binfmt)", bool(arches),
                       ", ".join(arches) if arches else "none registered (apt-get install qemu-user-static "
                       "binfmt-support to build arm64 etc.)"))
    bw = shutil.which("bwrap")
    if bw:
        probe = namespace_probe(bw)
        out.append(Finding("sandbox", "bubblewrap", probe.returncode == 0,
                           _version([bw, "--version"]) or "" if probe.returncode == 0
                           else f"cannot create namespaces: {probe.stderr.strip()}", True))
    else:
        out.append(Finding("sandbox", "bubblewrap", False, "not installed: scripts/host-setup.sh", True))
    overlay = "overlay" in Path("/proc/filesystems").read_text()
    out.append(Finding("sandbox", "overlayfs", overlay, "available" if overlay else "missing: modprobe overlay", True))
    loop = Path("/dev/loop-control").exists() and shutil.which("mkfs.ext4") is not None
    out.append(Finding("sandbox", "loop devices (disk budgets)", loop,
                       "each testbed writes to an ext4 of its disk limit on a loop device" if loop else
                       "no /dev/loop-control or mkfs.ext4: per-test disk limits cannot be made "
                       "(modprobe loop; apt-get install e2fsprogs)", True))
    try:
        filter_bytes()
        sec, detail = True, "Docker's default rules, loaded by bubblewrap"
    except ImageciError as exc:
        sec, detail = False, str(exc)
    out.append(Finding("sandbox", "seccomp filter", sec, detail, True))
    mode = cgroup_mode()
    out.append(Finding("sandbox", "cgroup limits", mode is not None,
                       f"cgroup {mode}: memory and pids limits applied" if mode
                       else "cgroups not writable: tests run without memory/pids limits"))
    return out


def _podman() -> list[Finding]:
    pod = shutil.which("podman")
    if not pod:
        return [Finding("podman", "podman + runc", False, "not installed: scripts/host-setup.sh")]
    info = subprocess.run([pod, "info", "--format", "{{.Host.OCIRuntime.Name}} cgroups {{.Host.CgroupsVersion}}"],
                          capture_output=True, text=True, timeout=60)
    conf = Path("/etc/containers/containers.conf.d/50-imageci.conf")
    runtime_ok = info.returncode == 0 and shutil.which("runc") is not None
    detail = info.stdout.strip() if info.returncode == 0 else info.stderr.strip()[-200:]
    if not conf.exists():
        detail += "; no containers.conf drop-in (scripts/host-setup.sh writes one; imageci passes runc + rlimits)"
    return [Finding("podman", "podman + runc", runtime_ok, detail)]


def _qemu(home: Path, refresh: bool) -> list[Finding]:
    qemu = qemu_binary()
    out = [Finding("qemu", "qemu-system-x86_64", qemu is not None,
                   _version([qemu, "--version"]) or "" if qemu else "not installed: scripts/host-setup.sh")]
    if qemu:
        kvm = AccelCache(home / "host-probes.json").get(refresh=refresh)
        verdict = "used: " if kvm.kvm else "not used, VMs run under TCG (slower; test timeouts are multiplied): "
        out.append(Finding("qemu", "KVM", kvm.kvm, verdict + kvm.why + (
            "" if kvm.source == "boot" else " (a real boot confirms it at the first VM)" if kvm.kvm else "")))
        missing = [f"{tool} ({package})" for tool, package in DISK_TOOLS if find_tool(tool) is None]
        ovmf = all(p.is_file() for p in OVMF)
        out.append(Finding("qemu", "disk images (UEFI, seeds)", ovmf and not missing,
                           "OVMF, mtools, dosfstools, sfdisk, grub-mkimage present" if ovmf and not missing else
                           "missing: " + ", ".join([*([] if ovmf else ["OVMF (ovmf)"]), *missing])
                           + " — scripts/host-setup.sh"))
    return out


def _others(home: Path) -> list[Finding]:
    ok, detail, vm = lxdclient.describe(home)
    out = [Finding("lxd", "LXD daemon", ok, detail)]
    if ok:
        out.append(Finding("lxd", "LXD virtual machines (lxd-vm)", vm,
                           "the daemon runs VMs" if vm else "the daemon has no qemu driver (KVM and "
                           "/dev/vhost-vsock are needed): tests on lxd-vm are skipped with this reason"))
    squash = shutil.which("mksquashfs")
    out.append(Finding("feeds", "mksquashfs (LXD form of versions)", squash is not None,
                       squash or "not installed (squashfs-tools): new versions are built without their LXD form "
                       "and are absent from the LXD feeds and the lxd testbed"))
    gpus, no_gpu = nvidia_gpus(), why_no_gpu()
    out.append(Finding("gpu", "NVIDIA GPU (podman, through CDI)", no_gpu is None,
                       "; ".join(gpus) if no_gpu is None else f"{no_gpu}: tests that need `gpu` are skipped here"))
    ssh = shutil.which("ssh")
    out.append(Finding("ssh", "ssh client", ssh is not None, ssh or "not installed: apt-get install openssh-client"))
    return out
