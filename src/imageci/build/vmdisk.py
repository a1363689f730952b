"""A bootable VM disk from a rootfs: an ext4 filesystem image (mke2fs -d, no
loop mounts, no root needed beyond reading the tree) converted to qcow2, plus
the kernel and initramfs taken from the image's /boot for direct kernel boot.

Derived from the image digest and cached per digest: the bytes booted are the
bytes tested.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imageci.errors import HostSetupError, TestbedError
from imageci.fs import safe_rmtree

HEADROOM = 2 << 30  # free space inside the guest's root filesystem, unless a test declares its disk limit


@dataclass(frozen=True)
class VmAssets:
    disk: Path  # qcow2, read-only base: testbeds put overlays on top
    kernel: Path
    initrd: Path


def find_kernel(root: Path) -> tuple[Path, Path] | None:
    """The newest /boot/vmlinuz-* with a matching initrd.img-*, if any."""
    boot = root / "boot"
    if not boot.is_dir():
        return None
    found = []
    for k in boot.glob("vmlinuz-*"):
        version = k.name.removeprefix("vmlinuz-")
        initrd = boot / f"initrd.img-{version}"
        if k.is_file() and not k.is_symlink() and initrd.is_file():
            found.append((version, k, initrd))
    if not found:
        return None
    _, kernel, initrd = sorted(found)[-1]
    return kernel, initrd


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/sbin/{name}" if os.path.exists(f"/sbin/{name}") else None)
    if not path:
        raise HostSetupError(f"{name} is not installed: run scripts/host-setup.sh (apt-get install {package})")
    return path


def vm_assets(root: Path, digest: str, cache_dir: Path, free_space: int = HEADROOM) -> VmAssets:
    """The disk (with ``free_space`` bytes free in its filesystem), kernel and initrd of an image."""
    key = f"{digest}-{free_space >> 20}m"
    final = cache_dir / key
    assets = VmAssets(final / "disk.qcow2", final / "vmlinuz", final / "initrd")
    if (cache_dir / f"{key}.complete").exists():
        return assets
    kernel = find_kernel(root)
    if kernel is None:
        raise TestbedError("the image has no kernel (/boot/vmlinuz-* with its initrd.img-*)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache_dir / f"{key}.complete").exists():
            return assets
        mkfs = _tool("mkfs.ext4", "e2fsprogs")
        qemu_img = _tool("qemu-img", "qemu-utils")
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".vm-{digest[:12]}-"))
        try:
            size_mb = (int(_tree_bytes(root) * 1.2) + free_space) // (1 << 20)
            raw = tmp / "disk.raw"
            subprocess.run([mkfs, "-q", "-F", "-L", "root", "-E", "root_owner=0:0", "-d", str(root), str(raw),
                            f"{size_mb}M"], check=True, capture_output=True)
            subprocess.run([qemu_img, "convert", "-O", "qcow2", str(raw), str(tmp / "disk.qcow2")], check=True,
                           capture_output=True)
            raw.unlink()
            shutil.copyfile(kernel[0], tmp / "vmlinuz")
            shutil.copyfile(kernel[1], tmp / "initrd")
            safe_rmtree(final)
            os.replace(tmp, final)
            (cache_dir / f"{key}.complete").touch()
        except subprocess.CalledProcessError as exc:
            safe_rmtree(tmp)
            raise TestbedError(f"making the VM disk failed: {exc.stderr.decode('utf-8', 'replace')[-500:]}") from exc
        except BaseException:
            safe_rmtree(tmp)
            raise
    return assets
