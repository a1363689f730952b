"""What init an image has (read from its unpacked root filesystem, through the image's own
symlinks): the container testbeds boot systemd images with their init.

A blob's bytes never change, so neither does its init: the answer is read from the verified tree once
per digest and kept beside it (``DIGEST.init`` in the rootfs cache, outside the tree, removed with it).
Every later process answers from that file, without checking the tree for changes (the tamper check
walks every file: most of a quick podman or LXD run's own time) nor unpacking it again after a trim."""

from __future__ import annotations

import json
from pathlib import Path

from imageci.formats.rootfs import unpacked_rootfs
from imageci.fs import write_file_atomically
from imageci.rootpath import resolve_in_root
from imageci.testbeds.base import ImageHandle

KEPT = ".init"  # DIGEST.init: {"init": the name of the file /sbin/init is, or null}


def init_of(image: ImageHandle, rootfs_cache: Path) -> str | None:
    """The name of the file the image's ``/sbin/init`` resolves to (``systemd``), None where it has none."""
    kept = rootfs_cache / f"{image.digest}{KEPT}"
    try:
        found = json.loads(kept.read_text())["init"]
        if found is None or isinstance(found, str):
            return found
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not kept yet (or damaged): read from the tree
    root = unpacked_rootfs(image.rootfs_tar, image.digest, rootfs_cache)
    init = resolve_in_root(root, "/sbin/init")  # the image's symlinks, never the host's
    name = init.name if init.is_file() else None
    write_file_atomically(kept, json.dumps({"init": name}).encode())
    return name


def has_systemd(image: ImageHandle, rootfs_cache: Path) -> bool:
    return init_of(image, rootfs_cache) == "systemd"


def has_init(image: ImageHandle, rootfs_cache: Path) -> bool:
    return init_of(image, rootfs_cache) is not None
