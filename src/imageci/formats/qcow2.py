"""qcow2 disk images as imageci takes them: standalone (no backing or data file),
unencrypted, at most 256 GiB, and whole by ``qemu-img check``; anything else is
refused before it is stored or booted (import, and the qemu testbed before a
boot)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from imageci.errors import UsageError
from imageci.hosttools import host_tool

QCOW2_MAGIC = b"QFI\xfb"
MAX_VIRTUAL_SIZE = 256 << 30


def is_qcow2(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == QCOW2_MAGIC
    except OSError:
        return False


def run_tool(argv: list[str], what: str, ok: tuple[int, ...] = (0,), cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)
    if done.returncode not in ok:
        raise UsageError(f"{what}: {(done.stderr or done.stdout).strip()[-600:] or f'exit {done.returncode}'}")
    return done


def check_qcow2(path: Path) -> int:
    """Refuse a qcow2 that is hostile or damaged; its virtual size."""
    qemu_img = host_tool("qemu-img", "qemu-utils")
    info = json.loads(run_tool([qemu_img, "info", "--output=json", "-f", "qcow2", str(path)],
                           f"{path} is not a readable qcow2").stdout)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise UsageError(f"{path} is an overlay of {info.get('backing-filename')!r}: imageci imports a standalone "
                         "disk (qemu-img convert -O qcow2 it first), never one that reads other files")
    specific = (info.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise UsageError(f"{path} keeps its data in another file ({specific['data-file']!r}): refused")
    if info.get("encrypted") or specific.get("encrypt"):
        raise UsageError(f"{path} is encrypted: imageci cannot read or boot it unattended")
    size = int(info.get("virtual-size") or 0)
    if not 0 < size <= MAX_VIRTUAL_SIZE:
        raise UsageError(f"{path} has a virtual size of {size} bytes (at most {MAX_VIRTUAL_SIZE >> 30} GiB)")
    done = run_tool([qemu_img, "check", "--output=json", "-f", "qcow2", str(path)],
                f"qemu-img check could not read {path}", ok=(0, 2, 3))
    try:
        report = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        report = {}
    if done.returncode == 2 or report.get("corruptions") or report.get("check-errors"):
        raise UsageError(f"{path} is damaged: qemu-img check found {report.get('corruptions', '?')} corruption(s) "
                         f"and {report.get('check-errors', 0)} error(s); nothing was imported")
    return size
