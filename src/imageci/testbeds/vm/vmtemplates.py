"""VM templates kept between processes: a VM of an image booted once and saved (its memory and its
frozen disk), in the home's ``vm-templates`` cache, so that a new imageci process restores a VM in
seconds instead of booting the image again.

A template is made once (a cold boot to SSH-ready, then qemu's ``migrate`` to a file) in the run's
directory and moved into the cache whole, named by the hash of everything a restore must match:
the image's digest, the VM's shape and CPUs, its firmware (and OVMF's code file), the accelerator,
the kernel arguments and the qemu binary. It holds what it was booted with — its own SSH key, its
cloud-init seed (disk images), its UEFI variable store — and a hard link to (or a copy of) the disk it
booted from, so that nothing else in the home (a trimmed VM disk, a removed blob) takes it away. A file
lock keeps two processes from booting the same template at once: the second waits, then restores.

A kept template is not trusted blindly: the identity of each of its files (device, inode, size,
mtime, ctime) is recorded when it is complete; any write changes a ctime, which only the kernel
sets, and a template whose files changed is discarded and booted again. (The base disk's ctime is
left out: a hard link's changes whenever another link to the store's blob comes or goes, and the
blob is tamper-checked by the store.) ``imageci gc`` trims the
cache, least recently used first, within ``IMAGECI_CACHE_BUDGET`` (``app.caches``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from imageci import cacheuse
from imageci.fs import safe_rmtree
from imageci.store.blobs import file_stamp
from imageci.testbeds.vm.cloudseed import Seed

FORMAT = 3  # what a template directory holds, and the VM's devices; a change makes every kept template a miss
DISK, BASE, STATE, KEY, SEED, UEFI_VARS, RECORD = ("disk.qcow2", "base.qcow2", "state", "id_ed25519",
                                                  "cidata.img", "OVMF_VARS.fd", "template.json")
log = logging.getLogger("imageci")


@dataclass(frozen=True)
class Template:
    """A booted-and-saved VM: its frozen disk overlay, its memory state, and what it was booted with."""

    disk: Path
    state: Path
    boot_seconds: float
    key: Path  # the SSH key its guest authorised
    seed: Seed | None  # the cloud-init seed it booted with (disk images)
    kept: bool = False  # found in the cache (made by an earlier process), not booted by this one

    @property
    def uefi_vars(self) -> Path:
        return self.disk.with_name(UEFI_VARS)


def template_name(parts: dict[str, object]) -> str:
    """The cache name of a template made of ``parts`` (everything a restore must match)."""
    return hashlib.sha256(json.dumps({"format": FORMAT, **parts}, sort_keys=True).encode()).hexdigest()[:32]


def _identity(directory: Path, name: str) -> str | None:
    """A template file's identity (the store's :func:`file_stamp`; None when it is missing); the base disk's
    without its ctime (a hard link's changes whenever another link to the same file is made or removed: the
    store's blob is tamper-checked as itself)."""
    path = directory / name
    if not path.exists():
        return None
    stamp = file_stamp(path)
    return stamp.rsplit(":", 1)[0] if name == BASE else stamp


def link_or_copy(src: Path, dest: Path) -> None:
    """``dest`` is ``src``'s bytes: a hard link where the file system allows it, else a (sparse) copy."""
    try:
        os.link(src, dest)
    except OSError:
        subprocess.run(["cp", "--sparse=always", "--reflink=auto", str(src), str(dest)], check=True,
                       capture_output=True)


class KeptTemplates:
    """The ``vm-templates`` cache: ``NAME/`` (a template) beside ``NAME.complete`` (its marker: its
    mtime is its last use) and ``NAME.lock``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextlib.contextmanager
    def making(self, name: str) -> Iterator[None]:
        """Held while a template of ``name`` is looked for and, if missing, made (one boot per name)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def find(self, name: str) -> Template | None:
        """The complete, unchanged template ``name``; one whose files changed is discarded (None)."""
        marker, tdir = self.root / f"{name}.complete", self.root / name
        if not marker.exists():
            return None
        try:
            record = json.loads((tdir / RECORD).read_text())
            files: dict[str, str | None] = record["files"]
            changed = [f for f, ident in files.items() if _identity(tdir, f) != ident]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            changed = [f"{RECORD} ({exc})"]
        if changed:
            log.warning(f"the kept VM template {name} changed since it was made ({', '.join(changed)}): "
                        "booting the image again")
            self.discard(name)
            return None
        cacheuse.touch(marker)
        seed = record.get("seed")
        return Template(tdir / DISK, tdir / STATE, float(record["boot_seconds"]), tdir / KEY,
                        Seed(tdir / SEED, **seed) if seed else None, kept=True)

    def keep(self, name: str, made: Template) -> Template:
        """Move ``made`` (a template directory this process booted and saved) into the cache as ``name``."""
        staging = made.disk.parent
        files = {f: _identity(staging, f) for f in (DISK, BASE, STATE, KEY, f"{KEY}.pub", SEED, UEFI_VARS)
                 if (staging / f).exists()}
        seed = made.seed
        record = {"boot_seconds": made.boot_seconds, "files": files,
                  "seed": {"instance_id": seed.instance_id, "hostname": seed.hostname, "nonce": seed.nonce}
                  if seed else None}
        (staging / RECORD).write_text(json.dumps(record))
        for leftover in ("qmp.sock", "known_hosts"):
            (staging / leftover).unlink(missing_ok=True)
        final = self.root / name
        safe_rmtree(final)
        os.replace(staging, final)
        (self.root / f"{name}.complete").write_text("")
        kept = self.find(name)
        assert kept is not None
        return Template(kept.disk, kept.state, kept.boot_seconds, kept.key, kept.seed)

    def discard(self, name: str) -> None:
        (self.root / f"{name}.complete").unlink(missing_ok=True)
        safe_rmtree(self.root / name)
