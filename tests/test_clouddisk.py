"""Cloud VM images as they ship (issue 15): a bootable disk built from the
cloud example (GPT, ESP, BIOS boot partition, GRUB, cloud-init), booted
unmodified through OVMF and SeaBIOS, the run's SSH key handed over by a
cloud-init NoCloud seed; snapshots and warm VMs work for it as for rootfs VMs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.build import bootdisk
from imageci.checks.base import Check
from imageci.checks.builtin import BuiltinCheck
from imageci.checks.dep8 import dep8_checks
from imageci.checks.script import ScriptCheck
from imageci.definitions.dep8 import load_dep8
from imageci.definitions.image import load_definition
from imageci.definitions.suite import load_suite
from imageci.engine.runner import Engine
from imageci.errors import SourceError
from imageci.store.models import Version
from imageci.store.states import DISK, ROOTFS
from imageci.testbeds.vm.qemu import QemuBackend
from imageci.verdicts import Verdict

from cloudkit import CLOUD, CLOUD_DEF, log_of, run_on, suite_checks
from conftest import Env, build_example, write_suite


@pytest.mark.parametrize(("patch", "message"), [
    ("format: disk\narchitecture: arm64\n", "'format: disk' is made for amd64 only, not arm64"),
    ("format: disk\ndisk:\n  size: 100M\n", "a disk image needs at least 512M"),
    ("disk:\n  size: 2G\n", "'disk' is for 'format: disk'"),
    ("format: disk\ndisk:\n  firmware: [uefi, uefi]\n", "lists a firmware twice"),
    ("format: disk\ndisk:\n  firmware: [coreboot]\n", "firmware"),
])
def test_bad_disk_definitions_are_refused_with_file_and_line(tmp_path: Path, patch: str, message: str) -> None:
    text = "name: bad\nsuite: bookworm\npackages: [linux-image-amd64]\n" + patch
    (tmp_path / "image.yaml").write_text(text)
    with pytest.raises(SourceError) as err:
        load_definition(tmp_path / "image.yaml")
    assert message in str(err.value)
    assert str(tmp_path / "image.yaml") + ":" in str(err.value)


def test_a_disk_image_needs_a_kernel(tmp_path: Path) -> None:
    (tmp_path / "image.yaml").write_text("name: bad\nsuite: bookworm\nformat: disk\npackages: [openssh-server]\n")
    with pytest.raises(SourceError, match="boots the image's own kernel"):
        load_definition(tmp_path / "image.yaml")


def test_disk_identifiers_follow_the_inputs() -> None:
    a, b = bootdisk.DiskIds.derive("x" * 64), bootdisk.DiskIds.derive("y" * 64)
    assert a == bootdisk.DiskIds.derive("x" * 64)
    assert len({a.disk, a.root_fs, a.root_part, a.esp_part, a.bios_part}) == 5
    assert a.root_fs != b.root_fs and len(a.esp_volume) == 8


def _raw(e: Env, version: Version, tmp_path: Path) -> Path:
    disk = next(a for a in version.artifacts if a.kind == DISK)
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(e.store.path(disk.digest)), str(raw)],
                   check=True)
    return raw


@pytest.fixture(scope="module")
def cloud(image_env: tuple[Env, Version]) -> tuple[Env, Version]:
    e, _ = image_env
    return e, build_example(e, CLOUD_DEF)


@pytest.mark.slow
def test_the_cloud_example_builds_a_bootable_disk(cloud: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = cloud
    kinds = {a.kind: a for a in version.artifacts}
    assert version.digest == kinds[DISK].digest  # the disk is the version's bytes
    assert ROOTFS in kinds
    info = json.loads(version.build_info or "{}")["disk"]
    assert info["firmware"] == ["uefi", "bios"]
    raw = _raw(e, version, tmp_path)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    parts = {p["node"].removeprefix(str(raw)): p for p in table["partitions"]}
    assert parts["1"]["type"] == bootdisk.TYPE_ROOT_X86_64
    assert parts["14"]["type"] == bootdisk.TYPE_BIOS_BOOT
    assert parts["15"]["type"] == bootdisk.TYPE_ESP
    # the ESP holds GRUB at the removable-media path
    esp = f"{raw}@@{parts['15']['start'] * 512}"
    listing = subprocess.run(["mdir", "-b", "-i", esp, "::/EFI/BOOT"], capture_output=True, text=True,
                             env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert "BOOTX64.EFI" in listing.upper()
    # the root partition is the version's rootfs, and its fstab and grub.cfg name it by UUID
    fields = _probe(raw, parts["1"]["start"])
    assert fields["TYPE"] == "ext4" and fields["UUID"] == info["root_uuid"]
    tree = e.settings.rootfs_cache / kinds[ROOTFS].digest
    assert f"UUID={info['root_uuid']} / ext4" in (tree / "etc/fstab").read_text()
    esp = _probe(raw, parts["15"]["start"])  # and the ESP is the one its /boot/efi line names
    assert esp["TYPE"] == "vfat" and f"UUID={esp['UUID']} /boot/efi vfat" in (tree / "etc/fstab").read_text()
    assert f"root=UUID={info['root_uuid']}" in (tree / "boot/grub/grub.cfg").read_text()
    # the MBR carries GRUB's boot code and points at the core image in the BIOS boot partition
    with raw.open("rb") as fh:
        mbr = fh.read(512)
    assert mbr[510:] == b"\x55\xaa"
    assert int.from_bytes(mbr[0x5C:0x64], "little") == parts["14"]["start"]


def _probe(raw: Path, sector: int) -> dict[str, str]:
    """What blkid finds in the partition starting at ``sector``."""
    probe = subprocess.run(["blkid", "-p", "-O", str(sector * 512), "-o", "export", str(raw)],
                           capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in probe.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def firmware_backends(cloud: tuple[Env, Version]) -> Iterator[dict[str, QemuBackend]]:
    e, _ = cloud
    backends = {"qemu": QemuBackend(e.home, e.settings.rootfs_cache, keep_warm=True, warm=0),
                "qemu-bios": QemuBackend(e.home, e.settings.rootfs_cache, keep_warm=True, warm=0, firmware="bios",
                                         name="qemu-bios")}
    yield backends
    for b in backends.values():
        b.shutdown()
    assert not list((e.home / "tmp" / "vms").glob("run-*"))


@pytest.mark.slow
def test_the_disk_boots_unmodified_through_uefi_and_bios(cloud: tuple[Env, Version],
                                                         firmware_backends: dict[str, QemuBackend],
                                                         tmp_path: Path) -> None:
    e, version = cloud
    d = write_suite(tmp_path / "s", {
        "firmware.sh": "#!/bin/sh\nif [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi\n",
        "dirty.sh": "#!/bin/sh\ntest ! -e /root/dirty && touch /root/dirty\n",
        "dirty-again.sh": "#!/bin/sh\ntest ! -e /root/dirty && touch /root/dirty\n",
    })
    checks: list[Check] = [ScriptCheck(s) for s in load_suite(d).tests]
    checks += [BuiltinCheck("login-works"), BuiltinCheck("boot-multi-user")]
    report = run_on(e, firmware_backends, version, checks)
    got = {(r.testbed, r.test_id): r for r in report.results}
    for key, r in got.items():
        assert r.verdict is Verdict.PASS, (key, r.reason, log_of(e, r)[-3000:])
    assert b"uefi" in log_of(e, got[("qemu", "firmware")])
    assert b"bios" in log_of(e, got[("qemu-bios", "firmware")])
    for b in firmware_backends.values():
        assert b.cold_boots == 1  # booted once, every test restored from its snapshot into a fresh overlay


def _dep8_tree(root: Path) -> Path:
    tests = root / "debian" / "tests"
    tests.mkdir(parents=True)
    (root / "debian" / "control").write_text("Source: machine-demo\nMaintainer: imageci <ci@example.org>\n\n"
                                             "Package: machine-demo\nArchitecture: all\nDescription: demo\n")
    (tests / "control").write_text("Tests: kernel\nRestrictions: isolation-machine\nDepends: bash\n")
    (tests / "kernel").write_text("#!/bin/sh\nset -e\ntest -e /proc/sys/kernel/random/boot_id\nuname -r\n")
    for t in tests.iterdir():
        t.chmod(0o755)
    return root


@pytest.mark.slow
def test_the_cloud_suite_and_a_dep8_machine_test_pass_on_the_vm(cloud: tuple[Env, Version],
                                                          firmware_backends: dict[str, QemuBackend],
                                                          tmp_path: Path) -> None:
    e, version = cloud
    qemu = {"qemu": firmware_backends["qemu"]}
    handle = Engine(e.catalog, e.store, {}).image_handle(version)
    assert {"reboot", "cloud-init", "isolation-machine"} <= qemu["qemu"].capabilities(handle)
    checks = suite_checks(CLOUD / "suite") + list(dep8_checks(load_dep8(_dep8_tree(tmp_path / "demo"))))
    assert {c.id for c in checks} >= {"cloud-init-done", "network-up", "dns-configured", "clean-shutdown",
                                      "reboot-works", "machine-demo/kernel"}
    report = run_on(e, qemu, version, checks)
    got = {r.test_id: r for r in report.results}
    for name, r in got.items():
        assert r.verdict is Verdict.PASS, (name, r.reason, log_of(e, r)[-3000:])
    assert b"off after" in log_of(e, got["clean-shutdown"])
    assert b"IPv6 not checked: testbed qemu offers none" in log_of(e, got["network-up"])
