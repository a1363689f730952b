"""What init an image has (read from its unpacked root filesystem, through the image's own
symlinks): the container testbeds boot systemd images with their init."""

from __future__ import annotations

from pathlib import Path

from imageci.formats.rootfs import unpacked_rootfs
from imageci.rootpath import resolve_in_root
from imageci.testbeds.base import ImageHandle


def has_systemd(image: ImageHandle, rootfs_cache: Path) -> bool:
    root = unpacked_rootfs(image.rootfs_tar, image.digest, rootfs_cache)
    init = resolve_in_root(root, "/sbin/init")  # the image's symlinks, never the host's
    return init.is_file() and init.name == "systemd"


def has_init(image: ImageHandle, rootfs_cache: Path) -> bool:
    root = unpacked_rootfs(image.rootfs_tar, image.digest, rootfs_cache)
    return resolve_in_root(root, "/sbin/init").is_file()
