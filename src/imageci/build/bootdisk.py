"""A bootable disk image (``format: disk``) made from the built tree, mounting nothing.

The layout is the one Debian's and Ubuntu's cloud images use, so what boots
here boots where they do: a GPT disk with

- partition 14, the BIOS boot partition (1 MiB) holding GRUB's i386-pc core
  image, reached from the protective MBR's boot code (SeaBIOS, legacy BIOS);
- partition 15, the EFI system partition (FAT32, 62 MiB) holding GRUB's
  x86_64-efi image at the removable-media path ``EFI/BOOT/BOOTX64.EFI``, so
  no NVRAM entry is needed (OVMF, any UEFI);
- partition 1, the root filesystem (ext4), last on the disk so that
  cloud-init's growpart can grow it into a bigger virtual disk.

Every step writes into one sparse raw file: ``sfdisk`` partitions it,
``mke2fs -d`` writes the tree into partition 1 (``-E offset``), ``mkfs.fat
--offset`` and mtools make and fill the ESP, and the boot sector and core
image are written at their sectors (what ``grub-bios-setup`` does when it
embeds GRUB in a BIOS boot partition). ``grub-mkimage`` builds both GRUB images
from the modules in the image itself (``/usr/lib/grub/<platform>``, from the
``grub-pc-bin`` and ``grub-efi-amd64-bin`` packages the build adds), with an
early configuration that finds the root filesystem by UUID and reads its
``/boot/grub/grub.cfg``. That file and ``/etc/fstab`` are written into the
tree by the build (``tree_files``), so the version's rootfs is exactly the
root partition's content. ``grub.cfg`` boots ``/vmlinuz`` and
``/initrd.img``, the links Debian's kernel packages keep pointing at the
newest kernel, with the console on ``ttyS0`` and ``tty0``.

The raw file becomes a compressed qcow2 (one coroutine: the same raw bytes
give the same qcow2 bytes). Partition, filesystem and volume identifiers are
derived from the build's input hash, and the ext4 filesystem's clock is
``SOURCE_DATE_EPOCH``. When what this writes from the same inputs changes,
``build.inputs.DISK_WRITER`` goes up, so the input hash (and the build cache
key) changes with it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from imageci.build.mmdebstrap import BuildPlan
from imageci.definitions.image import DiskSpec
from imageci.errors import BuildError
from imageci.hosttools import host_tool

SECTOR = 512
MIB = 1 << 20
BIOS_BOOT = (2048, 2048)  # (start, sectors): 1 MiB at 1 MiB
ESP = (4096, 126976)  # 62 MiB at 2 MiB
ROOT_START = 131072  # 64 MiB
GPT_BACKUP = 33  # sectors the backup GPT takes at the end of the disk
TYPE_BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
TYPE_ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
TYPE_ROOT_X86_64 = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Discoverable Partitions Specification
# GRUB modules built into both images: enough to find the root filesystem, read grub.cfg and boot Linux.
MODULES = ("part_gpt", "part_msdos", "ext2", "search", "search_fs_uuid", "normal", "linux", "configfile", "echo",
           "test", "gzio", "serial", "terminal", "sleep", "boot", "loadenv", "cat", "ls", "reboot", "halt")
MODULES_BIOS = ("biosdisk", *MODULES)
MODULES_UEFI = ("fat", "efi_gop", *MODULES)
# The i386-pc boot sector (boot.img): where it keeps the first sector of the core image, and the jump that
# a hard disk install replaces with two NOPs (boot/i386/pc/boot.S in GRUB).
KERNEL_SECTOR = 0x5C
DRIVE_CHECK = 0x66
MBR_TABLE = (0x1B8, 0x1FE)  # disk signature and partition table: kept from the protective MBR
BLOCKLIST = SECTOR - 12  # diskboot.img's first blocklist entry: start (u64), sectors (u16), segment (u16)
PACKAGES = {"uefi": "grub-efi-amd64-bin", "bios": "grub-pc-bin"}


@dataclass(frozen=True)
class DiskIds:
    """A disk's identifiers, the same for the same build inputs."""

    disk: str
    root_part: str
    esp_part: str
    bios_part: str
    root_fs: str
    esp_volume: str  # FAT volume id, 8 hex digits

    @classmethod
    def derive(cls, seed: str) -> DiskIds:
        ns = uuid.UUID("6f1f5a52-3f0c-4e4c-9a55-0c7f1f3c2a10")

        def of(role: str) -> str:
            return str(uuid.uuid5(ns, f"{seed}/{role}"))

        return cls(disk=of("disk"), root_part=of("root-part"), esp_part=of("esp-part"), bios_part=of("bios-part"),
                   root_fs=of("root-fs"), esp_volume=uuid.uuid5(ns, f"{seed}/esp-fs").hex[:8].upper())

    @property
    def esp_fs(self) -> str:
        """The ESP's volume id as /dev/disk/by-uuid names it."""
        return f"{self.esp_volume[:4]}-{self.esp_volume[4:]}"


def packages(spec: DiskSpec) -> list[str]:
    """What the build adds to the image's packages: GRUB's modules for each firmware."""
    return [PACKAGES[f] for f in spec.firmware]


def tree_files(spec: DiskSpec, ids: DiskIds) -> dict[str, str]:
    """Files written into the tree during the build: the root partition is then the rootfs itself."""
    fstab = f"UUID={ids.root_fs} / ext4 rw,discard,errors=remount-ro 0 1\n"
    if "uefi" in spec.firmware:
        fstab += f"UUID={ids.esp_fs} /boot/efi vfat umask=0077,nofail 0 2\n"
    args = " ".join(a for a in ("ro", "console=tty0", "console=ttyS0,115200n8", spec.kernel_args) if a)
    grub = (
        "# made by imageci for a format: disk image; it boots /vmlinuz and /initrd.img,\n"
        "# the links Debian's kernel packages keep pointing at the newest kernel\n"
        "set timeout=0\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input console serial\n"
        "terminal_output console serial\n"
        "menuentry 'Debian GNU/Linux' {\n"
        f"  search --no-floppy --fs-uuid --set=root {ids.root_fs}\n"
        f"  linux /vmlinuz root=UUID={ids.root_fs} {args}\n"
        "  initrd /initrd.img\n"
        "}\n"
    )
    return {"/etc/fstab": fstab, "/boot/grub/grub.cfg": grub}


def plan_disk(plan: BuildPlan, input_hash: str) -> tuple[DiskSpec | None, DiskIds]:
    """Add what a disk image's tree needs (boot loaders, fstab, grub.cfg) to ``plan``; the disk's
    shape (None: not a disk image) and its identifiers, derived from the input hash."""
    spec, ids = plan.definition.disk_spec, DiskIds.derive(input_hash)
    if spec is not None:
        plan.extra_packages = packages(spec)
        plan.extra_files = tree_files(spec, ids)
    return spec, ids


def disk_info(spec: DiskSpec, ids: DiskIds) -> dict[str, object]:
    """What the version's build info records of its disk (the qemu testbed reads ``firmware``)."""
    return {"format": "qcow2", "size": spec.bytes, "firmware": list(spec.firmware), "root_uuid": ids.root_fs,
            "partitions": {"root": 1, **({"bios-boot": 14} if "bios" in spec.firmware else {}),
                           **({"esp": 15} if "uefi" in spec.firmware else {})}}


def _run(argv: list[str], what: str, env: dict[str, str] | None = None, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise BuildError(f"{what} failed ({argv[0]} exit {done.returncode}): "
                         f"{(done.stderr or done.stdout).strip()[-800:]}")


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, dirs, files in os.walk(root):
        for name in files + dirs:
            try:
                total += max(os.lstat(os.path.join(dirpath, name)).st_size, 4096)
            except OSError:
                continue
    return total


def root_sectors(size: int) -> int:
    """The root partition's size: from 64 MiB to the last whole MiB before the backup GPT."""
    end = (size // SECTOR - GPT_BACKUP) // 2048 * 2048
    return end - ROOT_START


def _partition(raw: Path, spec: DiskSpec, ids: DiskIds) -> None:
    lines = ["label: gpt", f"label-id: {ids.disk}", "unit: sectors", "first-lba: 2048",
             f"{raw}1 : start={ROOT_START}, size={root_sectors(raw.stat().st_size)}, type={TYPE_ROOT_X86_64}, "
             f"uuid={ids.root_part}, name=\"root\""]
    if "bios" in spec.firmware:
        lines.append(f"{raw}14 : start={BIOS_BOOT[0]}, size={BIOS_BOOT[1]}, type={TYPE_BIOS_BOOT}, "
                     f"uuid={ids.bios_part}, name=\"bios\"")
    if "uefi" in spec.firmware:
        lines.append(f"{raw}15 : start={ESP[0]}, size={ESP[1]}, type={TYPE_ESP}, uuid={ids.esp_part}, "
                     f"name=\"esp\"")
    _run([host_tool("sfdisk", "fdisk"), "--quiet", "--no-reread", "--no-tell-kernel", str(raw)], "partitioning",
         stdin="\n".join(lines) + "\n")


def _root_fs(raw: Path, tree: Path, ids: DiskIds, epoch: int) -> None:
    sectors = root_sectors(raw.stat().st_size)
    need = tree_bytes(tree)
    if need * 1.1 + 64 * MIB > sectors * SECTOR:
        raise BuildError(f"disk.size is too small: the tree takes {need >> 20} MiB and the root partition would "
                         f"be {sectors * SECTOR >> 20} MiB; give at least {((need * 11 // 10) >> 20) + 192}M")
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=str(epoch), LC_ALL="C")
    _run([host_tool("mke2fs", "e2fsprogs"), "-q", "-F", "-t", "ext4", "-L", "root", "-U", ids.root_fs, "-m", "1",
          "-E", f"offset={ROOT_START * SECTOR},root_owner=0:0,hash_seed={ids.root_fs}", "-d", str(tree),
          str(raw), f"{sectors * SECTOR // 1024}k"], "writing the root filesystem", env=env)


def _grub_image(tree: Path, platform: str, out: Path, modules: tuple[str, ...], early: Path) -> None:
    directory = tree / "usr/lib/grub" / platform
    if not (directory / "moddep.lst").is_file():
        raise BuildError(f"the image has no GRUB modules for {platform} (/usr/lib/grub/{platform})")
    _run([host_tool("grub-mkimage", "grub-common"), "-O", platform, "-d", str(directory), "-o", str(out), "-p",
          "/boot/grub", "-c", str(early), *modules], f"making GRUB's {platform} image")


def _esp(raw: Path, tree: Path, ids: DiskIds, workdir: Path, early: Path, epoch: int) -> None:
    efi = workdir / "BOOTX64.EFI"
    _grub_image(tree, "x86_64-efi", efi, MODULES_UEFI, early)
    os.utime(efi, (epoch, epoch))
    # --invariant before -i: it fixes the volume id too (1234-ABCD), and the last word wins
    _run([host_tool("mkfs.fat", "dosfstools"), "--invariant", "-F", "32", "-s", "1", "-S", "512", "-n", "EFI",
          "-i", ids.esp_volume, "--offset", str(ESP[0]), str(raw), str(ESP[1] * SECTOR // 1024)],
         "making the EFI system partition")
    image = f"{raw}@@{ESP[0] * SECTOR}"
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1", SOURCE_DATE_EPOCH=str(epoch))
    _run([host_tool("mmd", "mtools"), "-i", image, "::/EFI", "::/EFI/BOOT"], "filling the EFI system partition", env)
    _run([host_tool("mcopy", "mtools"), "-m", "-i", image, str(efi), "::/EFI/BOOT/BOOTX64.EFI"],
         "filling the EFI system partition", env)


def _bios(raw: Path, tree: Path, workdir: Path, early: Path) -> None:
    """GRUB's core image in the BIOS boot partition and its boot sector in the MBR."""
    core = workdir / "core.img"
    _grub_image(tree, "i386-pc", core, MODULES_BIOS, early)
    data = bytearray(core.read_bytes())
    sectors = -(-len(data) // SECTOR)
    if sectors > BIOS_BOOT[1]:
        raise BuildError(f"GRUB's core image ({len(data)} bytes) does not fit the BIOS boot partition")
    length, _segment = struct.unpack_from("<HH", data, BLOCKLIST + 8)
    if not 0 < length <= sectors - 1:
        raise BuildError("GRUB's core image has no blocklist where i386-pc keeps it (an unknown GRUB?)")
    struct.pack_into("<Q", data, BLOCKLIST, BIOS_BOOT[0] + 1)  # the rest follows its first sector
    boot = bytearray((tree / "usr/lib/grub/i386-pc/boot.img").read_bytes())
    if len(boot) != SECTOR or boot[510:512] != b"\x55\xaa":
        raise BuildError("the image's GRUB boot.img is not a boot sector")
    struct.pack_into("<Q", boot, KERNEL_SECTOR, BIOS_BOOT[0])
    boot[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"  # a hard disk: trust the drive the BIOS passes
    with raw.open("r+b") as fh:
        mbr = fh.read(SECTOR)
        boot[MBR_TABLE[0]:MBR_TABLE[1]] = mbr[MBR_TABLE[0]:MBR_TABLE[1]]
        fh.seek(0)
        fh.write(boot)
        fh.seek(BIOS_BOOT[0] * SECTOR)
        fh.write(data)


def make_disk(tree: Path, spec: DiskSpec, ids: DiskIds, out: Path, workdir: Path, epoch: int) -> None:
    """Write the bootable disk of ``tree`` as a compressed qcow2 at ``out``."""
    raw = workdir / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(spec.bytes)
    try:
        _partition(raw, spec, ids)
        _root_fs(raw, tree, ids, epoch)
        early = workdir / "early.cfg"
        early.write_text(f"search --no-floppy --fs-uuid --set=root {ids.root_fs}\nset prefix=($root)/boot/grub\n")
        if "uefi" in spec.firmware:
            _esp(raw, tree, ids, workdir, early, epoch)
        if "bios" in spec.firmware:
            _bios(raw, tree, workdir, early)
        _run([host_tool("qemu-img", "qemu-utils"), "convert", "-q", "-m", "1", "-c", "-f", "raw", "-O", "qcow2",
              str(raw), str(out)], "writing the qcow2 disk")
    finally:
        raw.unlink(missing_ok=True)
