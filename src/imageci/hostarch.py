"""Which architectures' binaries this host can run: its own, the ones its
kernel runs natively (i386 on amd64, armhf on some arm64), and those a
binfmt_misc handler (qemu-user) is registered for. The sandbox and podman run
the image's programs on the host kernel, so a foreign image needs one."""

from __future__ import annotations

import os
from pathlib import Path

_UNAME_TO_DEBIAN = {"x86_64": "amd64", "aarch64": "arm64", "i686": "i386", "armv7l": "armhf", "ppc64le": "ppc64el",
                    "riscv64": "riscv64", "s390x": "s390x"}
# Debian architecture → the name qemu-user's binfmt handlers use
_QEMU_USER = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "arm", "armel": "arm", "i386": "i386",
              "ppc64el": "ppc64le", "riscv64": "riscv64", "s390x": "s390x", "mips64el": "mips64el"}
_NATIVE_EXTRA = {"amd64": {"i386"}}
BINFMT = Path("/proc/sys/fs/binfmt_misc")


def host_architecture() -> str:
    """This host's Debian architecture name."""
    machine = os.uname().machine
    return _UNAME_TO_DEBIAN.get(machine, machine)


def binfmt_architectures() -> list[str]:
    """qemu-user handlers registered and enabled (their qemu names)."""
    found = []
    for f in sorted(BINFMT.glob("qemu-*")) if BINFMT.is_dir() else []:
        try:
            if f.read_text().startswith("enabled"):
                found.append(f.name.removeprefix("qemu-"))
        except OSError:
            continue
    return found


def runnable_architectures() -> list[str]:
    """Every architecture whose programs run here: the host's, what its kernel runs natively, and those
    with a binfmt_misc handler (Debian names)."""
    host = host_architecture()
    by_qemu = {q: a for a, q in _QEMU_USER.items() if a != "armel"}
    found = {host, *_NATIVE_EXTRA.get(host, set())} | {by_qemu[q] for q in binfmt_architectures() if q in by_qemu}
    return sorted(found)


def why_cannot_run(architecture: str) -> str | None:
    """None when this host can run ``architecture``'s binaries, else why not."""
    host = host_architecture()
    if architecture == host or architecture in _NATIVE_EXTRA.get(host, set()):
        return None
    if _QEMU_USER.get(architecture, architecture) in binfmt_architectures():
        return None
    return (f"this {host} host cannot run {architecture} programs (no binfmt_misc handler; "
            "apt-get install qemu-user-static binfmt-support)")
