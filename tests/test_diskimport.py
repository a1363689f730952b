"""Importing qcow2 disk images (issue 15): what is refused before anything is
recorded, and what is read from a disk that is accepted — its partitions, its
firmware, its root filesystem with modes, owners and special bits intact."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from imageci.build.diskimport import TYPE_ROOT_X86_64
from imageci.store.states import DISK, ROOTFS

from conftest import Env

pytestmark = pytest.mark.root

SFDISK_GPT_ROOT = f"label: gpt\nstart=2048, type={TYPE_ROOT_X86_64}\n"


def small_tree(root: Path) -> Path:
    """A root filesystem in miniature: an ELF program, an os-release, a setuid program owned by
    someone else, a sticky world-writable directory."""
    for d in ("etc", "usr/bin", "usr/lib", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/usr/bin/env", root / "usr/bin/env")
    (root / "usr/lib/os-release").write_text('ID=debian\nVERSION_CODENAME=bookworm\nNAME="Tiny"\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    helper = root / "usr/bin/helper"
    helper.write_text("#!/bin/sh\n")
    helper.chmod(0o4755)
    os.chown(helper, 1000, 1000)
    os.chmod(helper, 0o4755)  # chown clears setuid
    (root / "var/tmp").chmod(0o1777)
    (root / "etc/.hidden").mkdir()
    (root / "etc/.hidden/tool").write_text("x")
    os.chmod(root / "etc/.hidden/tool", 0o2750)
    (root / "etc/host-etc").symlink_to("/etc")  # points out of the image: never followed
    return root


def make_disk(tmp: Path, tree: Path | None, name: str = "disk", table: str = SFDISK_GPT_ROOT,
              size_mb: int = 64) -> Path:
    """A qcow2 whose first partition is an ext4 filesystem of ``tree`` (none: an empty disk)."""
    raw = tmp / f"{name}.raw"
    subprocess.run(["truncate", "-s", f"{size_mb}M", str(raw)], check=True)
    if tree is not None:
        subprocess.run(["sfdisk", "-q", str(raw)], input=table, text=True, check=True)
        blocks = (size_mb - 4) * 256  # inside the partition (sfdisk aligns its end to 1 MiB)
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-b", "4096", "-d", str(tree), "-E", "offset=1048576",
                        str(raw), str(blocks)], check=True)
    out = tmp / f"{name}.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return out


def corrupt(qcow2: Path) -> Path:
    """Point the disk's first L1 entry nowhere (qemu-img check: corruptions)."""
    data = bytearray(qcow2.read_bytes())
    l1 = struct.unpack(">Q", data[40:48])[0]
    data[l1:l1 + 8] = struct.pack(">Q", (1 << 63) | 0x12345)
    qcow2.write_bytes(bytes(data))
    return qcow2


def test_a_disk_without_a_boot_loader_imports_with_its_tree_intact_and_says_so(env: Env, tmp_path: Path) -> None:
    disk = make_disk(tmp_path, small_tree(tmp_path / "tree"))
    done = env.cli("import", "tiny-disk", str(disk))
    assert done.returncode == 0, done.stderr
    [version] = env.catalog.versions("tiny-disk")
    kinds = {a.kind: a for a in version.artifacts}
    assert version.digest == kinds[DISK].digest  # the disk's bytes are the version's
    assert env.store.path(version.digest).read_bytes() == disk.read_bytes()
    info = json.loads(version.build_info or "{}")
    assert info["transport"] == "qcow2" and version.architecture == "amd64"
    assert info["disk"]["firmware"] == [] and info["disk"]["label"] == "gpt"
    assert "no boot loader found" in info["disk"]["notes"][0]
    with tarfile.open(env.store.path(kinds[ROOTFS].digest)) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
    helper = members["usr/bin/helper"]
    assert (helper.mode & 0o7777, helper.uid, helper.gid) == (0o4755, 1000, 1000)
    assert members["var/tmp"].mode & 0o7777 == 0o1777
    assert members["etc/.hidden/tool"].mode & 0o7777 == 0o2750
    assert members["etc/host-etc"].issym() and members["etc/host-etc"].linkname == "/etc"
    assert members["etc/os-release"].issym() and members["etc/os-release"].linkname == "../usr/lib/os-release"
    again = env.cli("import", "tiny-disk", str(disk))
    assert again.returncode == 0 and "already imported" in again.stdout


@pytest.mark.parametrize(("what", "message"), [
    ("corrupt", "is damaged: qemu-img check found"),
    ("overlay", "is an overlay of"),
    ("empty", "no partition table"),
    ("no-os", "holds an operating system"),
    ("xfs-like", "no root filesystem imageci can read"),
])
def test_hostile_or_damaged_disks_are_refused_and_nothing_is_recorded(env: Env, tmp_path: Path, what: str,
                                                                      message: str) -> None:
    if what == "corrupt":
        disk = corrupt(make_disk(tmp_path, small_tree(tmp_path / "tree")))
    elif what == "overlay":
        base = make_disk(tmp_path, small_tree(tmp_path / "tree"), "base")
        disk = tmp_path / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(disk)],
                       check=True)
    elif what == "empty":
        disk = make_disk(tmp_path, None)
    elif what == "no-os":
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "README").write_text("just data\n")
        disk = make_disk(tmp_path, tmp_path / "data")
    else:  # a partition with no filesystem imageci reads
        disk = make_disk(tmp_path, small_tree(tmp_path / "tree"), table="label: gpt\nstart=2048, type=L\n")
        raw = tmp_path / "x.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
        with raw.open("r+b") as fh:  # wipe the ext4 superblock
            fh.seek(1048576 + 1024)
            fh.write(b"\0" * 1024)
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(disk)], check=True)
    done = env.cli("import", "hostile-disk", str(disk))
    assert done.returncode == 2 and message in done.stderr, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert env.catalog.versions("hostile-disk") == []
    assert not list(env.settings.tmp_dir.glob("build-*"))  # its work directory is gone
