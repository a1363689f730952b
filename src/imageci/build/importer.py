"""Images built elsewhere (Koji, Packer, distrobuilder, buildpacks, buildah, …)
become versions on ``testing``, the same as the ones imageci builds.

A qcow2 disk image is a version whose bytes are the disk (``build.diskimport``:
checked, its root filesystem read without mounting), booted by the qemu testbed
through its firmware.

A root filesystem tarball is stored uncompressed; an OCI image is flattened
(``build.layers``: whiteouts and opaque directories honoured, every layer
checked against its digests) and its runtime configuration (env, entrypoint,
cmd, user, labels, working directory, ports, volumes) kept as the version's
``oci-config`` artifact, where structure tests and the podman testbed read it.
Either way the tree is unpacked once, through the same hostile-entry checks a
test run applies, before anything is recorded: a refused image leaves nothing
in the catalog. The same bytes imported again are the same version.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from imageci.build.diskimport import read_disk, tar_tree
from imageci.build.ocisource import SourceSpec, materialize, parse_source, read_layout
from imageci.config import Settings
from imageci.definitions.image import NAME_RE
from imageci.errors import UsageError
from imageci.formats import lxdimage
from imageci.formats.layers import DamagedImageError, flatten
from imageci.formats.oci import ImageConfig
from imageci.formats.qcow2 import is_qcow2
from imageci.formats.rootfs import discard_unpacked, unpacked_rootfs
from imageci.fs import safe_rmtree
from imageci.hostarch import host_architecture
from imageci.owners import process_owner
from imageci.rootpath import os_release
from imageci.store.blobs import Blob, BlobStore, hash_file
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import OCI_CONFIG, SUITE, Version
from imageci.store.snapshots import pack_tree
from imageci.store.states import DISK

CHUNK = 1 << 20


@dataclass
class ImportResult:
    version: Version
    identical: bool  # these bytes were already this version: nothing new was recorded
    source: str
    layers: int  # 0 for a rootfs tarball
    seconds: float


def _decompressor(path: Path) -> Callable[[], BinaryIO]:
    with path.open("rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return lambda: cast(BinaryIO, gzip.open(path, "rb"))
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lambda: cast(BinaryIO, lzma.open(path, "rb"))
    if magic.startswith(b"BZh"):
        return lambda: cast(BinaryIO, bz2.open(path, "rb"))
    return lambda: path.open("rb")


def _plain_tarball(source: Path, out: Path) -> None:
    """``source`` (plain, gzip, xz, bzip2 or zstd) as an uncompressed tar at ``out``."""
    with source.open("rb") as fh:
        magic = fh.read(4)
    try:
        if magic == b"\x28\xb5\x2f\xfd":
            if shutil.which("zstd") is None:
                raise UsageError(f"{source} is zstd-compressed: install zstd")
            done = subprocess.run(["zstd", "-dqf", str(source), "-o", str(out)], capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                raise UsageError(f"cannot decompress {source}: {done.stderr.strip()}")
            return
        with _decompressor(source)() as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise UsageError(f"cannot decompress {source}: {exc}") from None


def _arch_of(wanted: str | None, found: str | None, source: str) -> str:
    if found is not None and wanted is not None and wanted != found:
        raise UsageError(f"{source} is a {found} image, not {wanted}")
    return found or wanted or host_architecture()


def _store_rootfs(spec: SourceSpec, disk: Path | None, name: str, workdir: Path, settings: Settings,
                  store: BlobStore, wanted: tuple[str | None, bool], on_step: Callable[[str], None]
                  ) -> tuple[Blob, Path, tuple[dict[str, Any], dict[str, Any], str, int]]:
    """The image's root file system as one tarball, checked entry by entry (unpacked once) and stored:
    its blob, its unpacked tree, and (config, build info, architecture, layers). ``wanted``: the
    architecture asked for, and whether a registry's TLS certificate is verified."""
    architecture, tls_verify = wanted
    fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix=store.tmp_prefix + "import-")
    os.close(fd)
    rootfs_tar = Path(tmp_name)
    try:
        if disk is not None:
            config, info, arch = _disk_rootfs(disk, name, workdir, rootfs_tar, architecture, on_step)
            layers = 0
        else:
            config, info, arch, layers = _rootfs(spec, name, workdir, rootfs_tar, architecture, tls_verify, on_step)
        rootfs = hash_file(rootfs_tar)
        on_step("checking every entry (unpacking it once)")
        try:
            tree = unpacked_rootfs(rootfs_tar, rootfs.digest, settings.rootfs_cache)
        except UsageError:  # refused: neither the tree nor the bytes are kept
            discard_unpacked(settings.rootfs_cache, rootfs.digest)
            (settings.rootfs_cache / f"{rootfs.digest}.lock").unlink(missing_ok=True)
            raise
        store.adopt(rootfs_tar, rootfs)
    finally:
        rootfs_tar.unlink(missing_ok=True)
    return rootfs, tree, (config, info, arch, layers)


def import_image(name: str, source: str, settings: Settings, catalog: Catalog, store: BlobStore, *,
                 architecture: str | None = None, suite: Path | None = None, tls_verify: bool = True,
                 on_step: Callable[[str], None] = lambda _s: None) -> ImportResult:
    """Import the image at ``source`` (see ``build.ocisource``) as a new version of ``name`` on
    ``testing``, with ``suite`` as its test suite."""
    started = time.monotonic()
    if not re.fullmatch(NAME_RE, name):
        raise UsageError(f"bad image name {name!r}: lowercase letters, digits, '.' and '-' (at most 63)")
    if suite is not None and not suite.is_dir():
        raise UsageError(f"--suite {suite}: no such directory")
    spec = parse_source(source)
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    token = process_owner(settings.tmp_dir).token
    workdir = Path(tempfile.mkdtemp(dir=settings.tmp_dir, prefix=f"build-{token}-import-"))
    try:
        disk = Path(spec.location) if spec.transport == "tarball" and is_qcow2(Path(spec.location)) else None
        rootfs, tree, (config, info, arch, layers) = _store_rootfs(spec, disk, name, workdir, settings, store,
                                                                   (architecture, tls_verify), on_step)
        snapshot = [] if suite is None else [_suite_artifact(store, suite)]
        disk_artifact = []
        digest = rootfs.digest
        if disk is not None:  # the disk's bytes are the version's: the ones booted, promoted and pulled
            on_step("storing the disk")
            blob = store.put_file(disk)
            disk_artifact = [NewArtifact(DISK, "disk.qcow2", blob.digest, blob.size)]
            digest = blob.digest
        same = catalog.find_by_digest(name, digest)
        if same is not None and same.state not in ("inactive", "deleted"):
            have = {a.kind: a.digest for a in same.artifacts}
            if snapshot and have.get(SUITE) != snapshot[0].digest:  # same bytes, the suite given now
                same = catalog.set_test_config(same.id, same.definition, snapshot)
            return ImportResult(same, identical=True, source=str(spec), layers=layers,
                                seconds=time.monotonic() - started)
        config_blob = store.put_bytes(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
        on_step("making its LXD image (metadata and squashfs)")
        lxd, info["lxd"] = lxdimage.artifacts_or_reason(store, tree, _lxd_image(name, tree, arch, info))
        artifacts = [*disk_artifact, NewArtifact("rootfs", "rootfs.tar", rootfs.digest, rootfs.size),
                     NewArtifact(OCI_CONFIG, "config.json", config_blob.digest, config_blob.size), *snapshot, *lxd]
        version = catalog.register_version(name, digest, artifacts, input_hash=None, definition=None,
                                           build_info=info, architecture=arch)
        return ImportResult(version, identical=False, source=str(spec), layers=layers,
                            seconds=time.monotonic() - started)
    finally:
        safe_rmtree(workdir)


def _lxd_image(name: str, tree: Path, arch: str, info: dict[str, Any]) -> lxdimage.LxdImage:
    """What LXD is told of an imported image: its os-release, and as its date the OCI ``created``
    (else the newest file in it)."""
    release = os_release(tree)
    os_id = release.get("ID", "linux")
    created = 0
    with contextlib.suppress(ValueError):
        created = int(datetime.fromisoformat(str(info.get("created") or "").replace("Z", "+00:00")).timestamp())
    return lxdimage.LxdImage(
        os=os_id.capitalize(), release=release.get("VERSION_CODENAME") or release.get("VERSION_ID") or "unknown",
        variant=name, architecture=arch, description=f"{name}: imported from {info['transport']}",
        created=created if created > 0 else lxdimage.newest_mtime(tree))


def _suite_artifact(store: BlobStore, suite: Path) -> NewArtifact:
    blob = pack_tree(suite, store)
    return NewArtifact(SUITE, "suite.tar", blob.digest, blob.size)


def _disk_rootfs(disk: Path, name: str, workdir: Path, out: Path, architecture: str | None,
                 on_step: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A qcow2's root filesystem as a tarball at ``out``; its runtime config, provenance (the disk's
    layout and firmware) and architecture."""
    on_step(f"checking {disk} (qemu-img check) and reading its root filesystem")
    tree = workdir / "tree"
    try:
        facts, found = read_disk(disk, workdir, tree)
        arch = _arch_of(architecture, found, str(disk))
        on_step("packing the root filesystem")
        tar_tree(tree, out)
    finally:
        safe_rmtree(tree)
    info: dict[str, Any] = {"builder": "imageci import", "source": str(disk), "transport": "qcow2",
                            "disk": facts.info()}
    return ImageConfig(labels=(("org.opencontainers.image.title", name),)).as_oci(), info, arch


def _rootfs(spec: SourceSpec, name: str, workdir: Path, out: Path, architecture: str | None, tls_verify: bool,
            on_step: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any], str, int]:
    """Write the root filesystem to ``out``; its runtime config, provenance, architecture and layer count."""
    info: dict[str, Any] = {"builder": "imageci import", "source": str(spec), "transport": spec.transport}
    if spec.transport == "tarball":
        on_step(f"reading {spec.location}")
        _plain_tarball(Path(spec.location), out)
        arch = _arch_of(architecture, None, str(spec))
        return ImageConfig(labels=(("org.opencontainers.image.title", name),)).as_oci(), info, arch, 0
    on_step(f"reading {spec}")
    layout, tag = materialize(spec, workdir, architecture or host_architecture(), tls_verify=tls_verify)
    image = read_layout(layout, tag, architecture or host_architecture())
    arch = _arch_of(architecture, image.architecture, str(spec))
    on_step(f"flattening {len(image.layers)} layer(s)")
    try:
        with out.open("wb") as fh:
            flatten(image.layers, fh)
    except DamagedImageError as exc:
        raise DamagedImageError(f"{spec}: {exc}") from None
    info.update(manifest=f"sha256:{image.manifest_digest}", config=f"sha256:{image.config_digest}",
                layers=[f"sha256:{layer.digest}" for layer in image.layers],
                created=str(image.config.get("created") or ""))
    runtime = dict(image.runtime)
    ImageConfig.from_oci(runtime)  # readable as imageci reads it
    return runtime, info, arch, len(image.layers)
