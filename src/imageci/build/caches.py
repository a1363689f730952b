"""What `imageci verify` checks besides the store: the caches derived from blobs.

An unpacked rootfs is compared entry by entry with its (verified) blob, a VM's
disk, kernel and initrd with the hashes recorded when they were made. A cache
that changed is reported and discarded: the next run makes it again from the
blob, so it is never tested.
"""

from __future__ import annotations

from pathlib import Path

from imageci.formats.rootfs import compare_with_archive, discard_unpacked
from imageci.formats.treemanifest import quick_check
from imageci.formats.vmdisk import asset_problems, discard_assets
from imageci.store.blobs import BlobStore, CorruptBlobError


def verify_caches(rootfs_cache: Path, vm_cache: Path, store: BlobStore) -> tuple[int, list[str]]:
    """(caches checked, what was wrong with each bad one); bad ones are discarded."""
    checked, bad = 0, []
    for marker in sorted(rootfs_cache.glob("*.complete")) if rootfs_cache.is_dir() else []:
        digest = marker.name.removesuffix(".complete")
        checked += 1
        if (rootfs_cache / f"{digest}.synthesized").exists():  # a bisection's intermediate: no blob of its own
            changed = quick_check(rootfs_cache / digest, rootfs_cache / f"{digest}.manifest", ctime=False)
            if changed:
                bad.append(f"intermediate image {digest[:12]} (bisection) changed since it was made ({changed[0]}); "
                           "discarded")
                discard_unpacked(rootfs_cache, digest)
            continue
        try:
            blob = store.verified_path(digest)
        except (CorruptBlobError, ValueError):
            bad.append(f"unpacked rootfs sha256:{digest}: its blob is missing or corrupt; discarded")
            discard_unpacked(rootfs_cache, digest)
            continue
        problems = compare_with_archive(blob, rootfs_cache / digest)
        if problems:
            shown = "; ".join(str(p) for p in problems[:5]) + (f" (+{len(problems) - 5} more)"
                                                              if len(problems) > 5 else "")
            bad.append(f"unpacked rootfs sha256:{digest} differs from its blob ({shown}); discarded")
            discard_unpacked(rootfs_cache, digest)
    for marker in sorted(vm_cache.glob("*.complete")) if vm_cache.is_dir() else []:
        checked += 1
        changes = asset_problems(marker)
        if changes:
            bad.append(f"VM disk {marker.name.removesuffix('.complete')}: {'; '.join(changes)}; discarded")
            discard_assets(marker)
    return checked, bad
