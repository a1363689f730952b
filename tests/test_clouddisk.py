"""Cloud VM images as they ship (issue 15): a bootable disk built from the
cloud example (GPT, ESP, BIOS boot partition, GRUB, cloud-init), booted
unmodified through OVMF and SeaBIOS, the run's SSH key handed over by a
cloud-init NoCloud seed; snapshots and warm VMs work for it as for rootfs VMs."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.build import bootdisk
from imageci.checks.base import Check
from imageci.checks.builtin import BuiltinCheck, builtin_checks
from imageci.checks.dep8 import dep8_checks
from imageci.checks.script import ScriptCheck
from imageci.definitions.dep8 import load_dep8
from imageci.definitions.image import load_definition
from imageci.definitions.suite import load_suite
from imageci.engine.results import RunReport
from imageci.engine.runner import Engine
from imageci.errors import SourceError
from imageci.store.catalog import NewArtifact
from imageci.store.models import Version
from imageci.store.states import DISK, ROOTFS
from imageci.testbeds.vm.qemu import QemuBackend
from imageci.verdicts import Verdict

from conftest import BUILD_CACHE, REPO, Env, build_example, write_suite
from test_diskimport import corrupt, make_disk, small_tree

CLOUD = REPO / "examples" / "debian-bookworm-cloud"
CLOUD_DEF = CLOUD / "image.yaml"


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
    mbr = raw.read_bytes()[:512]
    assert mbr[510:] == b"\x55\xaa"
    assert int.from_bytes(mbr[0x5C:0x64], "little") == parts["14"]["start"]


def _probe(raw: Path, sector: int) -> dict[str, str]:
    """What blkid finds in the partition starting at ``sector``."""
    probe = subprocess.run(["blkid", "-p", "-O", str(sector * 512), "-o", "export", str(raw)],
                           capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in probe.splitlines() if "=" in line)


def _log(e: Env, r: object) -> bytes:
    digest = r.attempts[-1].log_digest  # type: ignore[attr-defined]
    return e.store.read_bytes(digest) if digest else b""


def _run(e: Env, backends: dict[str, QemuBackend], version: Version, checks: list[Check]) -> RunReport:
    engine = Engine(e.catalog, e.store, dict(backends), jobs=2)  # two VMs at a time: TCG uses a core each
    return engine.run(version, checks, list(backends), rerun_all=True)


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
    report = _run(e, firmware_backends, version, checks)
    got = {(r.testbed, r.test_id): r for r in report.results}
    for key, r in got.items():
        assert r.verdict is Verdict.PASS, (key, r.reason, _log(e, r)[-3000:])
    assert b"uefi" in _log(e, got[("qemu", "firmware")])
    assert b"bios" in _log(e, got[("qemu-bios", "firmware")])
    for b in firmware_backends.values():
        assert b.cold_boots == 1  # booted once, every test restored from its snapshot into a fresh overlay


REBOOT_TEST = """#!/bin/sh
set -e
case "${AUTOPKGTEST_REBOOT_MARK:-}" in
  "") cat /proc/sys/kernel/random/boot_id > /var/tmp/boot-1; echo first; /tmp/autopkgtest-reboot one; echo unreached ;;
  one) test "$(cat /var/tmp/boot-1)" != "$(cat /proc/sys/kernel/random/boot_id)"; echo "after one" ;;
  *) echo "unexpected mark $AUTOPKGTEST_REBOOT_MARK" >&2; exit 1 ;;
esac
"""


def _dep8_tree(root: Path) -> Path:
    tests = root / "debian" / "tests"
    tests.mkdir(parents=True)
    (root / "debian" / "control").write_text("Source: machine-demo\nMaintainer: imageci <ci@example.org>\n\n"
                                             "Package: machine-demo\nArchitecture: all\nDescription: demo\n")
    (tests / "control").write_text("Tests: reboots\nRestrictions: needs-root, needs-reboot, isolation-machine\n"
                                   "Depends: bash\n\nTests: kernel\nRestrictions: isolation-machine\nDepends: bash\n")
    (tests / "reboots").write_text(REBOOT_TEST)
    (tests / "kernel").write_text("#!/bin/sh\nset -e\ntest -e /proc/sys/kernel/random/boot_id\nuname -r\n")
    for t in tests.iterdir():
        t.chmod(0o755)
    return root


def _suite_checks(suite_dir: Path) -> list[Check]:
    suite = load_suite(suite_dir)
    return [*builtin_checks(suite), *(ScriptCheck(s) for s in suite.tests)]


@pytest.mark.slow
def test_the_cloud_suite_and_dep8_reboots_pass_on_the_vm(cloud: tuple[Env, Version],
                                                          firmware_backends: dict[str, QemuBackend],
                                                          tmp_path: Path) -> None:
    e, version = cloud
    qemu = {"qemu": firmware_backends["qemu"]}
    handle = Engine(e.catalog, e.store, {}).image_handle(version)
    assert {"reboot", "cloud-init", "isolation-machine"} <= qemu["qemu"].capabilities(handle)
    checks = _suite_checks(CLOUD / "suite") + list(dep8_checks(load_dep8(_dep8_tree(tmp_path / "demo"))))
    assert {c.id for c in checks} >= {"cloud-init-done", "network-up", "dns-configured", "clean-shutdown",
                                      "reboot-works", "machine-demo/reboots"}
    report = _run(e, qemu, version, checks)
    got = {r.test_id: r for r in report.results}
    for name, r in got.items():
        assert r.verdict is Verdict.PASS, (name, r.reason, _log(e, r)[-3000:])
    reboots = _log(e, got["machine-demo/reboots"])
    assert b"first" in reboots and b"after one" in reboots and b"unreached" not in reboots
    assert b"off after" in _log(e, got["clean-shutdown"])
    assert b"IPv6 not checked: testbed qemu offers none" in _log(e, got["network-up"])


@pytest.fixture(scope="module")
def broken(cloud: tuple[Env, Version]) -> Version:
    e, _ = cloud
    return build_example(e, REPO / "examples" / "debian-bookworm-cloud-broken" / "image.yaml")


@pytest.mark.slow
def test_the_broken_cloud_image_fails_exactly_what_is_broken(cloud: tuple[Env, Version], broken: Version,
                                                             firmware_backends: dict[str, QemuBackend]) -> None:
    e, _ = cloud
    report = _run(e, {"qemu": firmware_backends["qemu"]}, broken, _suite_checks(CLOUD / "suite"))
    got = {r.test_id: r for r in report.results}
    failed = {name for name, r in got.items() if r.verdict is Verdict.FAIL}
    assert failed == {"boot-multi-user", "no-failed-units", "cloud-init-done"}, {
        n: (r.verdict, r.reason) for n, r in got.items()}
    assert all(r.verdict is Verdict.PASS for n, r in got.items() if n not in failed)
    assert "imageci-demo-broken.service" in got["no-failed-units"].reason
    assert "status is 'running'" in got["cloud-init-done"].reason
    assert "never ran" in got["cloud-init-done"].reason


@pytest.fixture(scope="module")
def other_disk() -> Path:
    """A cloud disk another tool made (tests/otherdisk.sh: debootstrap, MBR, SYSLINUX, BIOS only),
    kept in the shared build cache under its script's digest."""
    script = REPO / "tests" / "otherdisk.sh"
    out = BUILD_CACHE / f"otherdisk-{hashlib.sha256(script.read_bytes()).hexdigest()[:16]}.qcow2"
    BUILD_CACHE.mkdir(parents=True, exist_ok=True)
    with open(BUILD_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            work = BUILD_CACHE / "otherdisk-work"
            done = subprocess.run(["sh", str(script), str(out.with_suffix(".tmp")), str(work)], capture_output=True,
                                  text=True, check=False)
            assert done.returncode == 0, done.stderr[-3000:]
            out.with_suffix(".tmp").rename(out)
            shutil.rmtree(work / "root", ignore_errors=True)
    return out


def _import(e: Env, name: str, disk: Path) -> Version:
    done = e.cli("import", name, str(disk))
    assert done.returncode == 0, done.stderr
    return e.catalog.versions(name)[-1]


@pytest.mark.slow
def test_a_disk_another_tool_made_imports_and_passes_the_same_suite(cloud: tuple[Env, Version], other_disk: Path,
                                                                    firmware_backends: dict[str, QemuBackend],
                                                                    tmp_path: Path) -> None:
    e, _ = cloud
    version = _import(e, "other-cloud", other_disk)
    info = json.loads(version.build_info or "{}")["disk"]
    assert info["firmware"] == ["bios"] and info["label"] == "dos" and info["partitions"]["root"] == 2
    d = write_suite(tmp_path / "s", {"firmware.sh": "#!/bin/sh\ntest ! -d /sys/firmware/efi && echo bios\n"})
    checks = _suite_checks(CLOUD / "suite") + [ScriptCheck(s) for s in load_suite(d).tests]
    report = _run(e, {"qemu": firmware_backends["qemu"]}, version, checks)
    for r in report.results:
        assert r.verdict is Verdict.PASS, (r.test_id, r.reason, _log(e, r)[-3000:])


def _vm_dirs(e: Env) -> list[Path]:
    return list((e.home / "tmp" / "vms").glob("run-*/vm-*"))


def _qemu_with(path_part: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "qemu-system" in line and path_part in line]


def _without_cloud_init(e: Env, version: Version, tmp_path: Path) -> Path:
    """The cloud disk with cloud-init switched off (/etc/cloud/cloud-init.disabled): it boots, but
    nothing configures its network or installs a key."""
    raw, out = tmp_path / "nocloud.raw", tmp_path / "nocloud.qcow2"
    disk = next(a for a in version.artifacts if a.kind == DISK)
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(e.store.path(disk.digest)), str(raw)],
                   check=True)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    root = next(p for p in table["partitions"] if p["node"].endswith("1") and not p["node"].endswith("11"))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "cmds").write_text(f"cd /etc/cloud\nwrite \"{tmp_path / 'empty'}\" cloud-init.disabled\n")
    subprocess.run(["debugfs", "-w", "-f", str(tmp_path / "cmds"), f"{raw}?offset={root['start'] * 512}"],
                   capture_output=True, check=True)
    subprocess.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return out


@pytest.mark.slow
def test_disks_that_cannot_come_up_are_errors_with_their_console_and_leave_nothing(
        cloud: tuple[Env, Version], firmware_backends: dict[str, QemuBackend], tmp_path: Path) -> None:
    e, version = cloud
    qemu = {"qemu": firmware_backends["qemu"]}
    checks: list[Check] = [BuiltinCheck("login-works"), BuiltinCheck("network-up")]
    # no boot loader at all: the firmware says so, at once
    tiny = small_tree(tmp_path / "tree")
    (tiny / "usr" / "bin" / "env").chmod(0o755)
    no_loader = _import(e, "no-loader", make_disk(tmp_path, tiny))
    report = _run(e, qemu, no_loader, checks)
    for r in report.results:
        assert r.verdict is Verdict.ERROR, (r.test_id, r.verdict, r.reason)
    first = next(r for r in report.results if "whole story" not in r.reason)
    assert "found nothing to boot" in first.reason, first.reason
    assert b"failed to load Boot0001" in _log(e, first)  # OVMF's words on the console, attached
    # a damaged disk that reached the store anyway (not through import): refused before it boots
    bad = corrupt(make_disk(tmp_path, tiny, "bad"))
    blob = e.store.put_file(bad)
    rootfs = next(a for a in version.artifacts if a.kind == ROOTFS)
    damaged = e.catalog.register_version(
        "damaged-disk", blob.digest, [NewArtifact(DISK, "disk.qcow2", blob.digest, blob.size),
                                      NewArtifact(ROOTFS, "rootfs.tar", rootfs.digest, rootfs.size)],
        input_hash=None, definition=None, build_info={"disk": {"firmware": ["uefi"]}}, architecture="amd64")
    report = _run(e, qemu, damaged, checks)
    assert {r.verdict for r in report.results} == {Verdict.ERROR}
    assert "cannot be booted" in report.results[0].reason and "qemu-img check" in report.results[0].reason
    # a guest that never gets an address (cloud-init off): an error once it sat at its login prompt
    silent = _import(e, "no-cloud-init", _without_cloud_init(e, version, tmp_path))
    report = _run(e, qemu, silent, checks)
    assert {r.verdict for r in report.results} == {Verdict.ERROR}, [(r.verdict, r.reason) for r in report.results]
    booted, told = sorted(report.results, key=lambda r: "whole story" in r.reason)
    assert "reached its login prompt but SSH did not answer" in booted.reason, booted.reason
    assert "the first test that needed it has the whole story" in told.reason  # booted once, not once per test
    assert b"login:" in _log(e, booted) and b"login:" in _log(e, told)  # the console is attached
    # every VM and overlay is gone, no qemu of theirs is left
    assert _vm_dirs(e) == []
    for v in (no_loader, damaged, silent):
        assert not list((e.home / "tmp" / "vms").glob(f"run-*/t*-{v.digest[:8]}"))
    assert _qemu_with(str(e.home)) == []  # (warm=0: the backends keep snapshots, never running VMs)
