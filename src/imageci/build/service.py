"""build → store → register: turn a definition into a version on ``testing``."""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageci import cacheuse
from imageci.build import bootdisk, inputs
from imageci.build.mmdebstrap import (
    BuildOutput,
    BuildPlan,
    cache_file,
    cached_file,
    from_cache,
    run_mmdebstrap,
    to_cache,
)
from imageci.config import Settings
from imageci.definitions.image import DiskSpec, ImageDefinition, LoadedDefinition
from imageci.errors import UsageError
from imageci.formats import lxdimage
from imageci.formats.oci import image_config
from imageci.formats.rootfs import unpacked_rootfs
from imageci.fs import safe_rmtree
from imageci.owners import process_owner
from imageci.store.blobs import Blob, BlobStore
from imageci.store.catalog import Catalog, NewArtifact
from imageci.store.models import MULTIARCH, OCI_CONFIG, SUITE, Version
from imageci.store.snapshots import pack_tree
from imageci.store.states import DISK, SQUASHFS


@dataclass
class BuildResult:
    version: Version
    skipped: bool  # same inputs as an existing version: nothing was built
    identical: bool  # built, but the bytes equal an existing version's
    input_hash: str
    seconds: float
    from_cache: bool = False


def build_images(loaded: LoadedDefinition, settings: Settings, catalog: Catalog, store: BlobStore, *,
                 force: bool = False, on_line: Callable[[str], None] | None = None,
                 suite: Path | None = None, only: set[str] | None = None) -> list[BuildResult]:
    """Build every product of the definition (one per architecture it lists; ``only``: some of them).
    ``suite``: the test suite to record with each version instead of the definition's.

    Versions built from one definition for several architectures share a group: the hash of every
    architecture's build inputs, recorded in their build info. A later build with the same inputs
    (``--arch``, or after one architecture failed) joins the same group; the gate of each version
    looks for its siblings there."""
    d = loaded.definition
    suite = suite.resolve() if suite is not None else loaded.suite_dir()
    mirror = inputs.fetch_mirror_state(d.mirror, d.suite)
    views = d.per_architecture()
    keys = {v.architecture: inputs.input_hash(v, mirror) for v in views}
    group = None
    if d.multiarch:
        group = {"group": hashlib.sha256(",".join(f"{a}={k}" for a, k in sorted(keys.items())).encode()).hexdigest(),
                 "products": {v.architecture: v.name for v in views}}
    results = []
    for view in d.per_architecture(only):
        if on_line is not None and d.multiarch:
            on_line(f"== {view.name}: {view.architecture}")
        results.append(_build_one(loaded, view, settings, catalog, store, mirror=mirror,
                                  key=keys[view.architecture], group=group, force=force, on_line=on_line,
                                  suite=suite))
    return results


def build_image(loaded: LoadedDefinition, settings: Settings, catalog: Catalog, store: BlobStore, *,
                force: bool = False, on_line: Callable[[str], None] | None = None,
                suite: Path | None = None) -> BuildResult:
    """``build_images`` of a definition that makes one product."""
    results = build_images(loaded, settings, catalog, store, force=force, on_line=on_line, suite=suite)
    if len(results) != 1:
        raise UsageError(f"{loaded.path} makes {len(results)} products (one per architecture)")
    return results[0]


def _build_one(loaded: LoadedDefinition, d: ImageDefinition, settings: Settings, catalog: Catalog,
               store: BlobStore, *, mirror: inputs.MirrorState, key: str, group: dict[str, Any] | None,
               force: bool, on_line: Callable[[str], None] | None, suite: Path | None) -> BuildResult:
    if not force:
        existing = catalog.find_by_input_hash(d.name, key)
        if existing is not None:
            return BuildResult(_with_tests(catalog, store, loaded, suite, existing, group), skipped=True,
                               identical=False, input_hash=key, seconds=0.0)
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    token = process_owner(settings.tmp_dir).token
    workdir = Path(tempfile.mkdtemp(dir=settings.tmp_dir, prefix=f"build-{token}-{d.name}-"))
    in_use = contextlib.ExitStack()  # the shared build cache is not trimmed while this build reads or adds to it
    if settings.build_cache:
        in_use.enter_context(cacheuse.using(settings.build_cache))
    try:
        plan = BuildPlan(definition=d, mirror=mirror, workdir=workdir)
        spec, ids = bootdisk.plan_disk(plan, key)
        out = None
        if settings.build_cache and not force:
            out = from_cache(settings.build_cache, key, workdir, plan.source_date_epoch)
        if out is None:
            out = run_mmdebstrap(plan, on_line=on_line)
            if settings.build_cache:
                to_cache(settings.build_cache, key, out)
        rootfs = store.move_file(out.rootfs)
        manifest = store.put_file(out.manifest)
        log = store.put_file(out.log)
        tree = unpacked_rootfs(store.path(rootfs.digest), rootfs.digest, settings.rootfs_cache)
        disk = None if spec is None else _disk(settings, store, key, (spec, ids), tree, out, workdir, on_line)
        digest = disk.digest if disk is not None else rootfs.digest
        same = catalog.find_by_digest(d.name, digest)
        if same is not None and same.state not in ("inactive", "deleted"):
            return BuildResult(_with_tests(catalog, store, loaded, suite, same, group), skipped=False,
                               identical=True, input_hash=key, seconds=out.seconds, from_cache=out.cached)
        info = _build_info(loaded, mirror, out, group)
        extra = []
        if spec is not None and disk is not None:
            info["disk"] = bootdisk.disk_info(spec, ids)
            extra.append(NewArtifact(DISK, "disk.qcow2", disk.digest, disk.size))
        lxd, info["lxd"] = _lxd(settings, store, key, tree, out, lxdimage.LxdImage(
            os=d.distribution.capitalize(), release=d.suite, variant=d.name, architecture=d.architecture,
            description=d.description or f"{d.name}: {d.distribution.capitalize()} {d.suite}",
            created=out.source_date_epoch))
        version = catalog.register_version(
            d.name, digest,
            [*extra, NewArtifact("rootfs", "rootfs.tar", rootfs.digest, rootfs.size),
             NewArtifact("manifest", "manifest.tsv", manifest.digest, manifest.size),
             NewArtifact("build-log", "build.log", log.digest, log.size),
             _config_artifact(store, d.name, digest), *_suite_artifact(store, suite), *lxd],
            input_hash=key, definition=loaded.text, build_info=info, architecture=d.architecture)
        return BuildResult(version, skipped=False, identical=False, input_hash=key, seconds=out.seconds,
                           from_cache=out.cached)
    finally:
        in_use.close()
        safe_rmtree(workdir)


def _disk(settings: Settings, store: BlobStore, key: str, planned: tuple[DiskSpec, bootdisk.DiskIds],
          tree: Path, out: BuildOutput, workdir: Path, on_line: Callable[[str], None] | None) -> Blob:
    """The version's bootable disk (``format: disk``): from the build cache, or made from ``tree`` now."""
    spec, ids = planned
    made = cached_file(settings.build_cache, key, "disk.qcow2") if out.cached else None
    if made is None:
        if on_line:
            on_line(f"making the {spec.size} disk image ({', '.join(spec.firmware)})")
        made = workdir / "disk.qcow2"
        bootdisk.make_disk(tree, spec, ids, made, workdir, out.source_date_epoch)
        cache_file(settings.build_cache, key, made)
    return store.put_file(made) if made.parent != workdir else store.move_file(made)


def _lxd(settings: Settings, store: BlobStore, key: str, tree: Path, out: BuildOutput,
         image: lxdimage.LxdImage) -> tuple[list[NewArtifact], dict[str, str]]:
    """The version's LXD artifacts; their squashfs from the build cache when the rootfs came from there
    (it is made from that rootfs and the build's epoch alone), else made now and kept there."""
    made = cached_file(settings.build_cache, key, lxdimage.FILENAMES[SQUASHFS]) if out.cached else None
    artifacts, info = lxdimage.artifacts_or_reason(store, tree, image, made)
    squash = next((a for a in artifacts if a.kind == SQUASHFS), None)
    if made is None and squash is not None:
        cache_file(settings.build_cache, key, store.path(squash.digest), lxdimage.FILENAMES[SQUASHFS])
    return artifacts, info


def _build_info(loaded: LoadedDefinition, mirror: inputs.MirrorState, out: BuildOutput,
                group: dict[str, Any] | None) -> dict[str, Any]:
    """How the version was built, recorded with it (``imageci repro`` rebuilds from this)."""
    info: dict[str, Any] = {
        "builder": inputs.builder_id(),
        "mirror": {"url": mirror.url, "suite": mirror.suite, "date": mirror.date},
        "source_date_epoch": out.source_date_epoch,
        "command": out.command,
        "seconds": round(out.seconds, 3),
        "from_cache": out.cached,
        "definition_path": str(loaded.path),
    }
    if group is not None:
        info[MULTIARCH] = group
    return info


def _config_artifact(store: BlobStore, name: str, digest: str) -> NewArtifact:
    blob = store.put_bytes(image_config(name, digest).to_json())
    return NewArtifact(OCI_CONFIG, "config.json", blob.digest, blob.size)


def _suite_artifact(store: BlobStore, suite: Path | None) -> list[NewArtifact]:
    if suite is None:
        return []
    blob = pack_tree(suite, store)
    return [NewArtifact(SUITE, "suite.tar", blob.digest, blob.size)]


def _with_tests(catalog: Catalog, store: BlobStore, loaded: LoadedDefinition, suite: Path | None,
                version: Version, group: dict[str, Any] | None) -> Version:
    """An unchanged image keeps its bytes, but its test configuration (the definition's ``tests`` and
    ``keep``, the suite's content) is what was just built from: a later run uses it, on any machine.
    Same bytes from new inputs join the new build's architecture group."""
    wanted = _suite_artifact(store, suite)
    if not any(a.kind == OCI_CONFIG for a in version.artifacts):
        wanted.append(_config_artifact(store, version.product.name, version.digest))
    have = {a.kind: a.digest for a in version.artifacts}
    drop = {SUITE} if suite is None and SUITE in have else set()
    info = json.loads(version.build_info or "{}")
    regroup = group is not None and info.get(MULTIARCH) != group
    if version.definition == loaded.text and not drop and not regroup and \
            all(have.get(a.kind) == a.digest for a in wanted):
        return version
    return catalog.set_test_config(version.id, loaded.text, wanted, drop=drop,
                                   build_info={**info, MULTIARCH: group} if regroup else None)
