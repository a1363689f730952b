"""Push a version to an OCI registry or layout (`imageci push`), byte for byte.

The image pushed is the version's OCI form (``build.oci``): its one layer is
the tested rootfs tarball, uncompressed, so a client that pulls it gets the
layer digest imageci tested; its config is the version's stored runtime
configuration. The manifest carries OCI annotations that say what it is:

- ``org.opencontainers.image.created``: the build's SOURCE_DATE_EPOCH (an
  import: its source's ``created``), RFC 3339.
- ``org.opencontainers.image.version``: the serial; ``.title``: the product.
- ``org.opencontainers.image.revision``: what it was made from — a build's
  input hash (definition + mirror state), an import's source manifest digest.
- ``org.opencontainers.image.source``: a build's mirror URL, an import's source.
- ``org.opencontainers.image.base.digest`` / ``.base.name``: an import's source
  manifest and reference (a build starts from nothing: it has none).
- ``io.imageci.digest`` (sha256 of the rootfs, imageci's name for the
  version) and ``io.imageci.image`` (NAME@SERIAL).

A push is recorded (destination, manifest digest, actor) only once the
destination accepted it; a refusal records nothing.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from imageci.app import access
from imageci.app.access import LOCAL, Principal
from imageci.app.session import Session
from imageci.app.versions import config_of
from imageci.build.ocipush import Destination, copy_to, parse_destination
from imageci.errors import UsageError
from imageci.formats.oci import write_layout
from imageci.fs import safe_rmtree
from imageci.owners import process_owner
from imageci.store.models import Version, label
from imageci.store.states import DISK


@dataclass(frozen=True)
class PushOutcome:
    image: str  # NAME@SERIAL
    destination: str
    manifest_digest: str  # sha256:…, as the destination holds it
    layer_digest: str  # sha256:… of the one layer: the tested rootfs
    annotations: dict[str, str]


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def created_epoch(version: Version) -> int:
    """When the image says it was made: SOURCE_DATE_EPOCH, an import's ``created``, else registration."""
    info = json.loads(version.build_info or "{}")
    if isinstance(info.get("source_date_epoch"), int):
        return int(info["source_date_epoch"])
    try:
        return int(datetime.fromisoformat(str(info.get("created") or "").replace("Z", "+00:00")).timestamp())
    except ValueError:
        return int(version.created_at.timestamp())


def annotations_of(version: Version) -> dict[str, str]:
    info = json.loads(version.build_info or "{}")
    oci = "org.opencontainers.image"
    out = {f"{oci}.created": _rfc3339(created_epoch(version)), f"{oci}.version": version.serial,
           f"{oci}.title": version.product.name, "io.imageci.digest": f"sha256:{version.digest}",
           "io.imageci.image": label(version)}
    if info.get("builder") == "imageci import":
        source, manifest = str(info.get("source") or ""), str(info.get("manifest") or "")
        out[f"{oci}.source"] = source
        if manifest:
            out |= {f"{oci}.revision": manifest, f"{oci}.base.digest": manifest, f"{oci}.base.name": source}
    else:
        mirror = info.get("mirror") or {}
        if mirror.get("url"):
            out[f"{oci}.source"] = str(mirror["url"])
        if version.input_hash:
            out[f"{oci}.revision"] = version.input_hash
    return {k: v for k, v in out.items() if v}


def push(session: Session, ref: str, destination: str, *, tls_verify: bool = True, authfile: Path | None = None,
         by: Principal = LOCAL) -> PushOutcome:
    """Push the version ``ref`` names to ``destination`` (``docker://REGISTRY/REPO[:TAG]``, ``oci:DIR[:TAG]``,
    ``oci-archive:FILE[:TAG]``; the tag defaults to the serial) and record where it went."""
    info = access.resolve(session.reader, by, ref)
    version = session.catalog.resolve(f"{info.name}@{info.serial}")
    dest: Destination = parse_destination(destination, version.serial)
    if any(a.kind == DISK for a in version.artifacts):
        raise UsageError(f"{label(version)} is a disk image: its bytes are its qcow2, which imageci does not "
                         "push to registries (an OCI image of its root filesystem would not be what was booted)")
    rootfs = next(a for a in version.artifacts if a.kind == "rootfs")
    tar = session.store.verified_path(rootfs.digest)  # a corrupt blob is never pushed
    notes = annotations_of(version)
    tmp = session.settings.tmp_dir
    tmp.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=tmp, prefix=f"build-{process_owner(tmp).token}-push-"))
    try:
        layout = write_layout(workdir / "oci", tar, version.digest, tag=dest.tag, architecture=version.architecture,
                              created_epoch=created_epoch(version), config=config_of(session, version),
                              annotations=notes)
        digest = copy_to(layout.layout, dest.tag, dest, workdir, tls_verify=tls_verify, authfile=authfile)
    finally:
        safe_rmtree(workdir)
    session.catalog.record_push(version.id, str(dest), digest, actor=by.name if by != LOCAL else None)
    return PushOutcome(image=label(version), destination=str(dest), manifest_digest=digest,
                       layer_digest=f"sha256:{version.digest}", annotations=notes)
