"""Testbed backends by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from imageci.capabilities import AUTO, LIGHTEST
from imageci.config import Settings
from imageci.errors import UsageError
from imageci.leftovers import Sweep
from imageci.testbeds.base import Backend

# Each backend's module is imported when one of its kind is made: a run in the sandbox never loads the VM's
# (nor dnspython, which the VMs' name server needs).


def _sandbox(s: Settings) -> Backend:
    from imageci.testbeds.sandbox import SandboxBackend

    return SandboxBackend(s.rootfs_cache, s.tmp_dir / "sandboxes")


def _podman(s: Settings) -> Backend:
    from imageci.testbeds.podman import PodmanBackend

    return PodmanBackend(s.home, s.rootfs_cache)


def _lxd(s: Settings) -> Backend:
    from imageci.testbeds.lxd import LxdBackend

    return LxdBackend(s.home, s.rootfs_cache)


def _lxd_vm(s: Settings) -> Backend:
    from imageci.testbeds.lxd import LxdVmBackend

    return LxdVmBackend(s.home)


def _qemu(s: Settings, firmware: str | None = None) -> Backend:
    from imageci.testbeds.vm.qemu import QemuBackend

    if firmware is None:
        return QemuBackend(s.home, s.rootfs_cache, accel=s.qemu_accel, warm=s.warm_vms,
                           tcg_multiplier=s.tcg_multiplier)
    return QemuBackend(s.home, s.rootfs_cache, accel=s.qemu_accel, warm=s.warm_vms,
                       tcg_multiplier=s.tcg_multiplier, firmware=firmware, name=f"qemu-{firmware}")


_FACTORIES: dict[str, Callable[[Settings], Backend]] = {
    "sandbox": _sandbox, "podman": _podman, "lxd": _lxd, "lxd-vm": _lxd_vm, "qemu": _qemu,
    # disk images through SeaBIOS (legacy BIOS) rather than their first firmware (UEFI for imageci's)
    "qemu-bios": lambda s: _qemu(s, "bios"),
}


def backend_names() -> list[str]:
    return [*sorted(_FACTORIES), "ssh:NAME", AUTO]


def expanded(names: Sequence[str]) -> list[str]:
    """The backends ``names`` need: ``auto`` stands for each of ``LIGHTEST``."""
    return list(dict.fromkeys(n for name in names for n in (LIGHTEST if name == AUTO else (name,))))


def check_name(name: str) -> str:
    """``name`` when it names a testbed kind, else a usage error listing them (nothing is made)."""
    if name.startswith("ssh:") and len(name) > 4 or name in _FACTORIES or name == AUTO:
        return name
    raise UsageError(f"unknown testbed {name!r}; available: {', '.join(backend_names())}")


def make_backend(name: str, settings: Settings) -> Backend:
    if name.startswith("ssh:"):
        from imageci.testbeds.ssh import SshBackend, load_host

        host = name.removeprefix("ssh:")
        return SshBackend(name, load_host(settings.hosts, host), settings.home / "known_hosts")
    if name == AUTO:
        raise UsageError("the testbed 'auto' is chosen for each test of a run (--testbed auto): name one here")
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UsageError(f"unknown testbed {name!r}; available: {', '.join(backend_names())}") from None
    return factory(settings)


def sweepers() -> tuple[Callable[[Settings, Sweep], None], ...]:
    """``imageci gc``: each backend removes what its dead owners left (podman's containers before their disk
    slots)."""
    from imageci.testbeds import disks, lxd, podman, sandbox
    from imageci.testbeds.vm import qemu

    return sandbox.sweep, qemu.sweep, lxd.sweep, podman.sweep, disks.sweep
