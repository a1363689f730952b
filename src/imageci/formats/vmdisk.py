"""A bootable VM disk from a rootfs: an ext4 filesystem image (mke2fs -d, no
loop mounts, no root needed beyond reading the tree) converted to qcow2, plus
the kernel and initramfs taken from the image's /boot for direct kernel boot.

Derived from the image digest and cached per digest: the bytes booted are the
bytes tested. The hashes of the disk, kernel and initrd are recorded when they
are made, and checked at first use in a process — hashed again only when a
file is not, to the nanosecond, the one hashed last (device, inode, size,
mtime, ctime: any write changes its ctime) — and by `imageci verify`, which
re-hashes them whatever their stamps say.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from imageci import cacheuse
from imageci.errors import TestbedError
from imageci.fs import safe_rmtree
from imageci.hosttools import host_tool
from imageci.store.blobs import file_stamp, hash_file

DISK_FORMAT = "v2"  # no reserved blocks: the free space is the test's whole disk budget, root or not
HEADROOM = 2 << 30  # free space inside the guest's root filesystem, unless a test declares its disk limit


@dataclass(frozen=True)
class VmAssets:
    disk: Path  # qcow2, read-only base: testbeds put overlays on top
    kernel: Path | None  # None: a disk image, booted through its firmware and bootloader
    initrd: Path | None


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




ASSET_FILES = ("disk.qcow2", "vmlinuz", "initrd")
_checked: set[Path] = set()
_checked_lock = threading.Lock()
log = logging.getLogger("imageci")


def _hashes(directory: Path) -> dict[str, str]:
    return {name: hash_file(directory / name).digest for name in ASSET_FILES}


def _directory(marker: Path) -> Path:
    """The asset directory that ``marker`` (``KEY.complete``) completes; its stamps are ``KEY.stamps``."""
    return marker.with_name(marker.name.removesuffix(".complete"))


def _stamps(directory: Path) -> str:
    """The files' identities (:func:`file_stamp`): while they are those of the files last hashed, no write has
    changed them."""
    try:
        return json.dumps({name: file_stamp(directory / name) for name in ASSET_FILES}, sort_keys=True)
    except OSError:
        return ""


def _unchanged_since_hashed(marker: Path) -> bool:
    directory = _directory(marker)
    try:
        return directory.with_name(directory.name + ".stamps").read_text() == _stamps(directory)
    except OSError:
        return False


def _hashed_now(marker: Path) -> None:
    directory = _directory(marker)
    with contextlib.suppress(OSError):
        directory.with_name(directory.name + ".stamps").write_text(_stamps(directory))


def asset_problems(marker: Path) -> list[str]:
    """What changed in a VM asset directory since it was made (its marker records the hashes)."""
    directory = _directory(marker)
    try:
        recorded = json.loads(marker.read_text() or "{}")
    except (OSError, ValueError):
        recorded = {}
    if not recorded:
        return [f"{directory.name}: no record of its bytes (made by an older imageci)"]
    try:
        now = _hashes(directory)
    except OSError as exc:
        return [f"{directory.name}: {exc}"]
    return [f"{directory.name}/{name}: content changed" for name in ASSET_FILES if now[name] != recorded.get(name)]


def discard_assets(marker: Path) -> None:
    marker.unlink(missing_ok=True)
    directory = _directory(marker)
    directory.with_name(directory.name + ".stamps").unlink(missing_ok=True)
    safe_rmtree(directory)


def vm_assets(root: Path, digest: str, cache_dir: Path, free_space: int = HEADROOM) -> VmAssets:
    """The disk (with ``free_space`` bytes free in its filesystem), kernel and initrd of an image.
    Made once per (digest, free space); checked against the hashes recorded when they were made
    at first use in a process, and made again if they changed."""
    key = f"{digest}-{free_space >> 20}m-{DISK_FORMAT}"
    final = cache_dir / key
    marker = cache_dir / f"{key}.complete"
    assets = VmAssets(final / "disk.qcow2", final / "vmlinuz", final / "initrd")
    with _checked_lock:
        if final in _checked and marker.exists():
            return assets
    kernel = find_kernel(root)
    if kernel is None:
        raise TestbedError("the image has no kernel (/boot/vmlinuz-* with its initrd.img-*)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            # hashed again only when a file is not the very one hashed last (a write changes its ctime)
            problems = [] if _unchanged_since_hashed(marker) else asset_problems(marker)
            cacheuse.touch(marker)  # used now (trimming removes the least recently used first)
            if not problems:
                _hashed_now(marker)
                with _checked_lock:
                    _checked.add(final)
                return assets
            log.warning(f"the VM disk of sha256:{digest[:12]} was modified ({'; '.join(problems)}); making it again")
            discard_assets(marker)
        mkfs = host_tool("mkfs.ext4", "e2fsprogs")
        qemu_img = host_tool("qemu-img", "qemu-utils")
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".vm-{digest[:12]}-"))
        try:
            size_mb = (int(_tree_bytes(root) * 1.2) + free_space) // (1 << 20)
            raw = tmp / "disk.raw"
            subprocess.run([mkfs, "-q", "-F", "-L", "root", "-m", "0", "-E", "root_owner=0:0", "-d", str(root),
                            str(raw), f"{size_mb}M"], check=True, capture_output=True)
            subprocess.run([qemu_img, "convert", "-O", "qcow2", str(raw), str(tmp / "disk.qcow2")], check=True,
                           capture_output=True)
            raw.unlink()
            shutil.copyfile(kernel[0], tmp / "vmlinuz")
            shutil.copyfile(kernel[1], tmp / "initrd")
            safe_rmtree(final)
            os.replace(tmp, final)
            marker.write_text(json.dumps(_hashes(final), sort_keys=True))
            _hashed_now(marker)
            with _checked_lock:
                _checked.add(final)
        except subprocess.CalledProcessError as exc:
            safe_rmtree(tmp)
            raise TestbedError(f"making the VM disk failed: {exc.stderr.decode('utf-8', 'replace')[-500:]}") from exc
        except BaseException:
            safe_rmtree(tmp)
            raise
    return assets
