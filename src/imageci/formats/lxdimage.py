"""A version as LXD and Incus take it: a metadata tarball (``metadata.yaml``)
and the root filesystem as squashfs, made when the version is published,
reproducibly, and stored in the CAS like every artifact.

- ``lxd.tar.xz`` / ``incus.tar.xz``: one tarball (the same bytes under both
  names): ``metadata.yaml`` with the LXD architecture, the creation date (the
  image's SOURCE_DATE_EPOCH) and its properties. Entries are sorted, owned by
  root, dated at that epoch; xz is deterministic.
- ``root.squashfs``: ``mksquashfs`` over the tree a test run sees (the checked,
  unpacked rootfs), zstd, with the filesystem and root directory dated at that
  epoch, so the same rootfs gives the same bytes. File times stay as in the
  rootfs: the bytes LXD unpacks are the bytes that were tested.

LXD's fingerprint of such an image is sha256(metadata bytes ‖ squashfs
bytes): the ``combined_squashfs_sha256`` of the feed (``app.feeds``).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from imageci.errors import ImageciError
from imageci.formats.lxdform import INIT
from imageci.rootpath import resolve_in_root, tar_has_file
from imageci.store.blobs import BlobStore
from imageci.store.catalog import NewArtifact
from imageci.store.states import INCUS_METADATA, LXD_METADATA, ROOTFS, SQUASHFS

# Debian's architecture names → the kernel's, which LXD's metadata.yaml uses.
LXD_ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "armel": "armv6l", "i386": "i686",
                     "ppc64el": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64el": "mips64",
                     "loong64": "loongarch64"}
FILENAMES = {LXD_METADATA: "lxd.tar.xz", INCUS_METADATA: "incus.tar.xz", SQUASHFS: "root.squashfs"}
SQUASHFS_OPTIONS = ["-comp", "zstd", "-Xcompression-level", "3"]  # as small as gzip here, 15× faster to make


class LxdImageError(ImageciError):
    """The LXD form of an image could not be made (mksquashfs missing or failing)."""


@dataclass(frozen=True)
class LxdImage:
    """What the feed says of a version, and what its metadata.yaml holds."""

    os: str  # as os-release's NAME would have it: "Debian"
    release: str  # the codename ("bookworm") or version
    variant: str  # the imageci product: several products of one release stay apart
    architecture: str  # Debian's name ("amd64")
    description: str
    created: int  # SOURCE_DATE_EPOCH

    def info(self, fingerprint: str, bootable: bool) -> dict[str, str]:
        """The version's ``build_info["lxd"]``: what the feed lists without opening a tarball."""
        return {"os": self.os, "release": self.release, "variant": self.variant, "fingerprint": fingerprint,
                "bootable": "yes" if bootable else "no"}


def lxd_architecture(debian: str) -> str:
    return LXD_ARCHITECTURES.get(debian, debian)


def metadata_tarball(image: LxdImage) -> bytes:
    """``metadata.yaml`` in a tar.xz whose bytes depend only on ``image``."""
    meta = {
        "architecture": lxd_architecture(image.architecture),
        "creation_date": image.created,
        "properties": {"architecture": image.architecture, "description": image.description,
                       "os": image.os, "release": image.release, "variant": image.variant},
        "templates": {},
    }
    body = yaml.safe_dump(meta, sort_keys=True).encode()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entry = tarfile.TarInfo("metadata.yaml")
        entry.size, entry.mtime, entry.mode, entry.uid, entry.gid = len(body), image.created, 0o644, 0, 0
        tar.addfile(entry, io.BytesIO(body))
    return lzma.compress(raw.getvalue(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)


def make_squashfs(tree: Path, out: Path, created: int) -> None:
    """``tree`` as a squashfs at ``out``; the same tree and ``created`` give the same bytes."""
    if shutil.which("mksquashfs") is None:
        raise LxdImageError("mksquashfs not found: install squashfs-tools to publish LXD images")
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}  # it would re-date every file
    done = subprocess.run(
        ["mksquashfs", str(tree), str(out), "-noappend", "-no-recovery", "-no-progress", "-quiet",
         "-mkfs-time", str(created), "-root-time", str(created), "-root-mode", "0755", "-root-uid", "0",
         "-root-gid", "0", *SQUASHFS_OPTIONS], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise LxdImageError(f"mksquashfs failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")


def fingerprint(metadata: bytes, squashfs: Path) -> str:
    """LXD's fingerprint of a split image: sha256 of the metadata tarball, then the rootfs."""
    h = hashlib.sha256(metadata)
    with squashfs.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def make_artifacts(store: BlobStore, tree: Path, image: LxdImage,
                   made: Path | None = None) -> tuple[list[NewArtifact], dict[str, str]]:
    """The LXD artifacts of the unpacked rootfs ``tree``, stored; and the version's ``lxd`` build info.
    ``made``: the squashfs of this tree made earlier (a build cache's copy, left in place), not made again."""
    meta = metadata_tarball(image)
    meta_blob = store.put_bytes(meta)
    if made is not None:
        combined, squash = fingerprint(meta, made), store.put_file(made)
    else:
        fd, name = tempfile.mkstemp(dir=store.tmp, prefix=store.tmp_prefix + "squashfs-")  # gc knows its owner
        os.close(fd)
        out = Path(name)
        try:
            make_squashfs(tree, out, image.created)
            combined = fingerprint(meta, out)
            squash = store.move_file(out)
        finally:
            out.unlink(missing_ok=True)
    artifacts = [NewArtifact(kind, FILENAMES[kind], meta_blob.digest, meta_blob.size)
                 for kind in (LXD_METADATA, INCUS_METADATA)]
    artifacts.append(NewArtifact(SQUASHFS, FILENAMES[SQUASHFS], squash.digest, squash.size))
    return artifacts, image.info(combined, resolve_in_root(tree, INIT).is_file())


def newest_mtime(tree: Path) -> int:
    """The newest modification time in ``tree`` (an imported image's creation date); a stamp that does
    not depend on when or where the tree was unpacked."""
    newest = 0
    for root, dirs, files in os.walk(tree):
        for name in (*dirs, *files):
            try:
                newest = max(newest, int(os.lstat(os.path.join(root, name)).st_mtime))
            except OSError:
                continue
    return newest


def artifacts_or_reason(store: BlobStore, tree: Path, image: LxdImage,
                        made: Path | None = None) -> tuple[list[NewArtifact], dict[str, str]]:
    """:func:`make_artifacts`, or none and the reason in the build info: the version is still made and
    tested, it is only absent from the LXD feed (``imageci doctor`` says why)."""
    try:
        return make_artifacts(store, tree, image, made)
    except LxdImageError as exc:
        return [], {"error": str(exc)}


def checked_info(store: BlobStore, artifacts: list[NewArtifact], claimed: object) -> dict[str, str] | None:
    """The ``lxd`` build info of a version published from elsewhere, with its fingerprint computed here
    from the stored bytes (a client's word for it is not taken); None when the version has no complete
    LXD form, or its fields are not plain short text (it is then absent from the feed)."""
    kinds = {a.kind: a for a in artifacts}
    meta, squash, rootfs = kinds.get(LXD_METADATA), kinds.get(SQUASHFS), kinds.get(ROOTFS)
    if meta is None or squash is None or rootfs is None or not isinstance(claimed, dict):
        return None
    fields = {k: claimed.get(k) for k in ("os", "release", "variant")}
    if not all(isinstance(v, str) and 0 < len(v) <= 64 and v.isprintable() and "," not in v and ":" not in v
               for v in fields.values()):
        return None
    combined = fingerprint(store.path(meta.digest).read_bytes(), store.path(squash.digest))
    bootable = tar_has_file(store.path(rootfs.digest), INIT)
    return {**{k: str(v) for k, v in fields.items()}, "fingerprint": combined, "bootable": "yes" if bootable else "no"}

