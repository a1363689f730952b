"""What the qemu backend decides on the host without booting anything: the accelerator probe
and a VM console file kept bounded."""

from __future__ import annotations

import time
from pathlib import Path

from imageci.testbeds.vm.accel import AccelCache, AccelProbe
from imageci.testbeds.vm.qemu import QemuBackend


def test_accel_probe_is_cached_and_can_be_demoted(tmp_path: Path) -> None:
    cache = AccelCache(tmp_path / "probes.json")
    first = cache.get()
    assert first.why  # always says why
    cache.record(AccelProbe(False, "a guest hung at boot under KVM", time.time()))
    again = cache.get()
    assert again.kvm is False and "hung" in again.why
    backend = QemuBackend(tmp_path, tmp_path)
    backend.accel_cache = cache
    assert backend.accel() == "tcg" and backend.timeout_multiplier() > 1


# what qemu 7.2 prints (and then pauses the guest, never exiting) on a nested KVM host that cannot
# emulate the x87 start-up every firmware and kernel runs
KVM_STOP = """KVM internal error. Suberror: 1
extra data[0]: 0x0000000000000001
emulation failure
EAX=00000000 EBX=00807000 ECX=00000001 EDX=00807154
"""


def test_a_guest_kvm_stopped_is_hopeless_at_once_and_the_probe_says_so(tmp_path: Path) -> None:
    from imageci.formats.vmdisk import VmAssets
    from imageci.testbeds.vm.accel import VM_ARCHES, kvm_stopped, probe_kvm
    from imageci.testbeds.vm.process import Vm

    assert kvm_stopped("qemu-system-x86_64: warning: host doesn't support requested feature\n") is None
    assert kvm_stopped(KVM_STOP) == "KVM internal error. Suberror: 1"
    vm = Vm("qemu-system-x86_64", VM_ARCHES["amd64"], VmAssets(tmp_path, tmp_path, tmp_path), tmp_path / "d",
            tmp_path, tmp_path / "key", accel="kvm")
    (tmp_path / "qemu.err").write_text(KVM_STOP)
    assert "KVM stopped the guest (KVM internal error. Suberror: 1)" in (vm.never_boots() or "")
    vm.accel = "tcg"  # the same words from a TCG guest are not KVM's
    assert vm.never_boots() is None
    # the probe runs the same x87 start-up: where KVM stops it, it says so (never "hung for 10 s")
    probe = probe_kvm()
    assert probe.kvm or "did not finish" not in probe.why, probe.why


def test_a_vm_s_endless_console_output_is_kept_bounded_on_the_host(tmp_path: Path) -> None:
    from imageci.testbeds.vm.vmconsole import CONSOLE_KEEP, bound_file, console_tail

    console = tmp_path / "console.log"
    with console.open("ab") as fh:  # as qemu appends the guest's serial output
        fh.write(b"boot\n" + b"x" * (40 << 20) + b"\nthe end\n")
        bound_file(console)
        fh.write(b"more\n")  # qemu's offset stays valid
    st = console.stat()
    assert st.st_size == 5 + (40 << 20) + 9 + 5
    assert st.st_blocks * 512 <= CONSOLE_KEEP + (1 << 20)  # the rest was returned to the host
    assert console_tail(console, 14) == "\nthe end\nmore\n"  # read from the end, never the whole hole


def test_a_kept_vm_template_is_found_until_one_of_its_files_changes(tmp_path: Path) -> None:
    """A template kept for later processes is theirs only while its files are the ones recorded: another
    hard link to its base disk (the store's blob) is no change; a write to its state is, even with the
    mtime put back, and the template is discarded."""
    import os

    from imageci.testbeds.vm.cloudseed import Seed
    from imageci.testbeds.vm.vmtemplates import BASE, DISK, KEY, SEED, STATE, KeptTemplates, Template

    staging = tmp_path / "run" / "t0-abc"
    staging.mkdir(parents=True)
    for name in (DISK, BASE, STATE, KEY, SEED):
        (staging / name).write_bytes(name.encode())
    seed = Seed(staging / SEED, "imageci-t0-1", "imageci-t0", "nonce")
    kept = KeptTemplates(tmp_path / "vm-templates")
    with kept.making("n1"):
        assert kept.find("n1") is None
        t = kept.keep("n1", Template(staging / DISK, staging / STATE, 12.5, staging / KEY, seed))
    assert not staging.exists() and t.disk == tmp_path / "vm-templates" / "n1" / DISK and not t.kept
    found = kept.find("n1")
    assert found is not None and found.kept and found.boot_seconds == 12.5
    assert found.seed is not None
    assert (found.seed.instance_id, found.seed.path) == ("imageci-t0-1", found.disk.with_name(SEED))
    os.link(found.disk.with_name(BASE), tmp_path / "another-link")
    assert kept.find("n1") is not None
    was = found.state.stat()
    found.state.write_bytes(b"STATE")  # same size, mtime put back
    os.utime(found.state, ns=(was.st_atime_ns, was.st_mtime_ns))
    assert kept.find("n1") is None
    assert not (tmp_path / "vm-templates" / "n1").exists() and not (tmp_path / "vm-templates" / "n1.complete").exists()
