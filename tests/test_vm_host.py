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
