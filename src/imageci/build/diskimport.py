"""Disk images built elsewhere (a cloud's download, Packer, virt-builder, …): a
qcow2 imported as a version whose bytes are that file, booted by the qemu
testbed through its own firmware like the disks imageci builds.

Refused before anything is recorded, each with its reason: a qcow2 that names
a backing file or an external data file (booting it would read files of this
host), an encrypted one, one larger than ``MAX_VIRTUAL_SIZE``, a damaged one
(``qemu-img check`` finds corruption), a disk with no partition table, or
with no root filesystem imageci can read (ext2/3/4, holding ``/etc`` and
``/usr``), or one ``e2fsck`` finds damaged.

The root filesystem is read without mounting it: the partition is copied out,
checked (``e2fsck -p`` on the copy: a journal to replay is replayed, damage is
refused), dumped with ``debugfs rdump`` and its modes, owners and special bits
set again from ``debugfs ls -p`` (rdump drops setuid, setgid and sticky bits).
The tree becomes the version's rootfs tarball (BOMs, diffs, the LXD form, the
container testbeds), through the same hostile-entry checks as any import.

What the disk boots with is read from it: an EFI system partition holding a
UEFI loader means ``uefi``; boot code in the master boot record means ``bios``.
A disk with neither is still imported — the firmware is the judge: tests on
it end in ``error`` with what the firmware said.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageci.errors import UsageError
from imageci.formats.qcow2 import check_qcow2, run_tool
from imageci.hosttools import host_tool

SECTOR = 512
CHUNK = 1 << 20
TYPE_ESP = {"C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ef"}
TYPE_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
EXT = ("ext2", "ext3", "ext4")
# ELF e_machine → Debian architecture
ELF_ARCH = {62: "amd64", 183: "arm64", 3: "i386", 40: "armhf", 243: "riscv64", 21: "ppc64el", 22: "s390x"}
LS_P = re.compile(r"^/(\d+)/(\d+)/(\d+)/(\d+)/(.*)/(\d*)/$")


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str  # GPT type GUID (upper case) or MBR type (hex, lower case)
    bootable: bool


@dataclass(frozen=True)
class DiskFacts:
    virtual_size: int
    label: str  # gpt or dos
    partitions: tuple[Partition, ...]
    root: Partition
    root_type: str
    root_uuid: str
    firmware: tuple[str, ...]
    notes: tuple[str, ...]

    def info(self) -> dict[str, Any]:
        """What the version's build info records (the qemu testbed reads ``firmware``)."""
        return {"format": "qcow2", "size": self.virtual_size, "firmware": list(self.firmware),
                "root_uuid": self.root_uuid, "label": self.label,
                "partitions": {"root": self.root.number,
                               **{k: p.number for p in self.partitions for k in ["esp"] if p.type in TYPE_ESP}},
                **({"notes": list(self.notes)} if self.notes else {})}


def _table(raw: Path) -> tuple[str, tuple[Partition, ...]]:
    done = subprocess.run([host_tool("sfdisk", "fdisk"), "--json", str(raw)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise UsageError("the disk has no partition table (GPT or MBR): not a bootable disk image")
    table = json.loads(done.stdout)["partitiontable"]
    unit = int(table.get("sectorsize", SECTOR))
    parts = []
    for p in table.get("partitions", []):
        number = int(re.sub(r"^.*?(\d+)$", r"\1", p["node"]))
        kind = str(p.get("type", ""))
        parts.append(Partition(number, int(p["start"]) * unit, int(p["size"]) * unit,
                               kind.upper() if "-" in kind else kind.lower(), bool(p.get("bootable"))))
    if not parts:
        raise UsageError("the disk's partition table lists no partition")
    return str(table["label"]), tuple(parts)


def _probe(raw: Path, part: Partition) -> dict[str, str]:
    done = subprocess.run([host_tool("blkid", "util-linux"), "-p", "-O", str(part.start), "-S", str(part.size),
                           "-o", "export", str(raw)], capture_output=True, text=True, check=False)
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def _copy_out(raw: Path, part: Partition, dest: Path) -> None:
    """The partition's bytes as a file of their own (sparse: runs of zeros are not written)."""
    with raw.open("rb") as src, dest.open("wb") as dst:
        src.seek(part.start)
        left = part.size
        while left > 0:
            block = src.read(min(CHUNK, left))
            if not block:
                break
            if block.count(0) == len(block):
                dst.seek(len(block), os.SEEK_CUR)
            else:
                dst.write(block)
            left -= len(block)
        dst.truncate(part.size)


def _has_os(image: Path) -> bool:
    done = subprocess.run([host_tool("debugfs", "e2fsprogs"), "-R", "ls -p /", str(image)], capture_output=True,
                          text=True, check=False)
    names = {m.group(5) for m in map(LS_P.match, done.stdout.splitlines()) if m}
    return {"etc", "usr"} <= names


def _fsck(image: Path) -> None:
    done = subprocess.run([host_tool("e2fsck", "e2fsprogs"), "-f", "-p", str(image)], capture_output=True, text=True,
                          check=False)
    if done.returncode >= 4:
        raise UsageError("the root filesystem is damaged (e2fsck could not repair a copy of it: "
                         f"{(done.stdout + done.stderr).strip()[-400:]}); nothing was imported")


def _dump(image: Path, tree: Path, workdir: Path) -> None:
    """The filesystem's files into ``tree`` (an empty directory), modes, owners and times as recorded."""
    debugfs = host_tool("debugfs", "e2fsprogs")
    # debugfs splits its command line on spaces: name the destination by a path without any (a home's may have)
    run_tool([debugfs, "-R", f"rdump / {tree.name}", str(image)], "reading the root filesystem failed",
         cwd=tree.parent)
    # rdump drops setuid, setgid and sticky bits: list every directory once and set each entry again
    dirs = ["/"]
    for dirpath, names, _files in os.walk(tree):  # real directories only: never through a symlink, which
        names[:] = [n for n in names if not os.path.islink(os.path.join(dirpath, n))]  # may point at the host's
        rel = "/" + os.path.relpath(dirpath, tree) if dirpath != str(tree) else "/"
        dirs += [os.path.join(rel, n) for n in names]
    for d in dirs:
        if any(c.isspace() or c in "\"'\\" for c in d):
            raise UsageError(f"the root filesystem has a directory name imageci does not read back: {d!r}")
    script = workdir / "ls.cmds"
    script.write_text("".join(f"ls -p {d}\n" for d in dirs))
    listing = run_tool([debugfs, "-f", str(script), str(image)], "listing the root filesystem failed").stdout
    current = ""
    for line in listing.splitlines():
        if line.startswith("debugfs: ls -p "):
            current = line.removeprefix("debugfs: ls -p ")
            continue
        m = LS_P.match(line)
        if not m or m.group(5) in (".", ".."):
            continue
        mode, uid, gid, name = int(m.group(2), 8), int(m.group(3)), int(m.group(4)), m.group(5)
        path = tree / current.lstrip("/") / name
        if not os.path.lexists(path):
            continue  # a device, fifo or socket: rdump leaves them out
        os.lchown(path, uid, gid)
        if not os.path.islink(path):
            os.chmod(path, mode & 0o7777)


def _architecture(tree: Path) -> str | None:
    for rel in ("usr/bin/env", "usr/bin/ls", "bin/ls", "usr/bin/sh"):
        p = tree / rel
        if p.is_file() and not p.is_symlink():
            head = p.read_bytes()[:20]
            if head[:4] == b"\x7fELF":
                machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
                return ELF_ARCH.get(machine)
    return None


def _firmware(raw: Path, parts: tuple[Partition, ...]) -> tuple[str, ...]:
    found = []
    for p in parts:
        if p.type not in TYPE_ESP:
            continue
        done = subprocess.run([host_tool("mdir", "mtools"), "-/", "-b", "-i", f"{raw}@@{p.start}", "::/EFI"],
                              capture_output=True, text=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
                              check=False)
        if any(line.upper().endswith(".EFI") for line in done.stdout.splitlines()):
            found.append("uefi")
            break
    with raw.open("rb") as fh:
        mbr = fh.read(SECTOR)
    if mbr[510:512] == b"\x55\xaa" and mbr[:440].strip(b"\x00"):
        found.append("bios")
    return tuple(found)


def read_disk(qcow2: Path, workdir: Path, tree: Path) -> tuple[DiskFacts, str]:
    """Check ``qcow2``, dump its root filesystem into ``tree``; what the disk is, and its architecture."""
    size = check_qcow2(qcow2)
    raw = workdir / "disk.raw"
    run_tool([host_tool("qemu-img", "qemu-utils"), "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(raw)],
         f"reading {qcow2} failed")
    try:
        label, parts = _table(raw)
        candidates = []
        for p in parts:
            fs = _probe(raw, p)
            if fs.get("TYPE") in EXT:
                candidates.append((p.type != TYPE_ROOT_X86_64, p.number, p, fs))
        if not candidates:
            kinds = sorted({_probe(raw, p).get("TYPE", "unknown") for p in parts})
            raise UsageError(f"no root filesystem imageci can read on the disk (ext2/3/4; found: {', '.join(kinds)})")
        image = workdir / "root.img"
        chosen: tuple[Partition, dict[str, str]] | None = None
        for _, _, candidate, probed in sorted(candidates, key=lambda c: (c[0], c[1])):
            _copy_out(raw, candidate, image)
            if _has_os(image):
                chosen = candidate, probed
                break
            image.unlink()
        if chosen is None:
            raise UsageError("no partition of the disk holds an operating system (/etc and /usr)")
        part, fs = chosen
        firmware = _firmware(raw, parts)
    finally:
        raw.unlink(missing_ok=True)
    try:
        _fsck(image)
        tree.mkdir(parents=True, exist_ok=True)
        _dump(image, tree, workdir)
    finally:
        image.unlink(missing_ok=True)
    notes = () if firmware else ("no boot loader found: no EFI system partition with a UEFI loader, no boot code "
                                 "in the master boot record",)
    facts = DiskFacts(size, label, parts, part, fs.get("TYPE", ""), fs.get("UUID", ""), firmware, notes)
    arch = _architecture(tree)
    if arch is None:
        raise UsageError("cannot tell the disk's architecture (no ELF program in /usr/bin)")
    return facts, arch


def tar_tree(tree: Path, out: Path) -> None:
    """``tree`` as an uncompressed tarball (sorted, numeric owners) at ``out``."""
    run_tool([host_tool("tar", "tar"), "--sort=name", "--numeric-owner", "-C", str(tree), "-cf", str(out), "."],
         f"packing {shlex.quote(str(tree))} failed")
