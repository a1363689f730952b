"""The smallest images the tests (and the bisection benchmark) make: static busybox with a few applets.
Kept apart from conftest so that a benchmark can import it without pytest's fixtures."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def require_tool(present: bool, what: str) -> None:
    """A tool that scripts/host-setup.sh --test installs is part of the test environment:
    missing, the test fails with the fix; it is never skipped."""
    if not present:
        import pytest

        pytest.fail(f"{what} is not installed (scripts/host-setup.sh --test installs it)", pytrace=False)


def busybox_rootfs(path: Path, marker: str, applets: tuple[str, ...] = ("sh", "cat", "true", "sleep", "ps"),
                   busybox: Path = Path("/bin/busybox")) -> Path:
    """The smallest image LXD boots: static busybox as /sbin/init (with ``applets`` linked in /bin), an
    inittab, an os-release, and ``marker`` in /etc/imageci-marker. ``busybox``: another architecture's."""
    require_tool(busybox.is_file(), "busybox-static")

    def entry(name: str, **kw: object) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime, info.mode = 1760000000, 0o755
        for k, v in kw.items():
            setattr(info, k, v)
        return info

    files = {"etc/os-release": b'ID=busybox\nVERSION_ID=1.35\nNAME="BusyBox"\n',
             "etc/inittab": b"::sysinit:/bin/true\n::respawn:/bin/sleep 3600\n",
             "etc/imageci-marker": marker.encode()}
    with tarfile.open(path, "w") as tar:
        for d in (".", "bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "run", "root"):
            tar.addfile(entry(d, type=tarfile.DIRTYPE))
        data = busybox.read_bytes()
        tar.addfile(entry("bin/busybox", size=len(data)), io.BytesIO(data))
        for applet in applets:
            tar.addfile(entry(f"bin/{applet}", type=tarfile.SYMTYPE, linkname="busybox", mode=0o777))
        tar.addfile(entry("sbin/init", type=tarfile.SYMTYPE, linkname="/bin/busybox", mode=0o777))
        for name, body in files.items():
            tar.addfile(entry(name, size=len(body), mode=0o644), io.BytesIO(body))
    return path
