"""Publishing a version to a server: its artifacts arrive as blobs (streamed,
each checked against the sha256 and size announced), then one commit registers
the version and puts it on ``testing`` in a single transaction. Until the
commit nothing is visible; the same bytes published again are the same version.

The steps, for every interface: ``blob_size`` (is it there already?),
``blob_writer`` (receive one), ``publish`` (commit). ``push`` does all three
from this home to a server (``imageci publish``, ``imageci build --publish``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.session import Session
from imageci.errors import Forbidden, UsageError
from imageci.store import lookups
from imageci.store.blobs import BlobWriter
from imageci.store.refs import parse_ref
from imageci.store.states import DEFAULT_NAMESPACE, DERIVED, DISK, ROOTFS

if TYPE_CHECKING:
    from imageci.store.catalog import NewArtifact

DIGEST = re.compile(r"^(sha256:)?[0-9a-f]{64}$")
FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")  # one path component, never "..", "/" or NUL
KIND = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
ARCH = re.compile(r"^[a-z0-9]{1,32}$")
CHUNK = 1 << 20


class ArtifactIn(BaseModel):
    kind: str  # rootfs, manifest, build-log, suite, oci-config, …
    filename: str
    digest: str  # sha256 (hex, or sha256:hex) of a blob uploaded before the commit
    size: int = Field(ge=0, le=1 << 50)


class PublishRequest(BaseModel):
    name: str
    digest: str  # the image's: the digest of its rootfs artifact (a disk image: of its disk artifact)
    architecture: str = "amd64"
    definition: str | None = Field(default=None, max_length=1 << 20)
    build_info: dict[str, Any] = Field(default_factory=dict)
    input_hash: str | None = None
    artifacts: list[ArtifactIn] = Field(min_length=1, max_length=64)


class Published(BaseModel):
    image: str  # NAME@SERIAL
    digest: str
    state: str
    namespace: str
    created: bool  # False: these bytes were already that version (a re-publish changes nothing)


def _hex(digest: str, what: str) -> str:
    if not DIGEST.fullmatch(digest):
        raise UsageError(f"{what}: not a sha256 digest: {digest[:80]!r}")
    return digest.removeprefix("sha256:")


def _may_publish(by: Principal) -> None:
    if by.anonymous or by.channel is not None or not (
            Scope.PUBLISH in by.scopes or Scope.ADMIN in by.scopes):
        raise Forbidden(f"{by.name} may not publish: it needs scope 'publish'")


def blob_size(session: Session, by: Principal, digest: str) -> int | None:
    """The size of the blob ``digest`` if the store has it (None: upload it)."""
    _may_publish(by)
    path = session.store.path(_hex(digest, "blob"))
    if not path.is_file():
        return None
    session.store.touch(digest)  # the commit that follows may count on it: gc's grace starts again
    return path.stat().st_size


def blob_writer(session: Session, by: Principal, digest: str, size: int | None) -> BlobWriter:
    """Where an upload of blob ``digest`` (``size`` bytes, when announced) goes; at most
    ``Settings.max_upload`` bytes (IMAGECI_MAX_UPLOAD)."""
    _may_publish(by)
    limit = session.settings.max_upload
    if size is not None and size > limit:
        from imageci.store.blobs import BlobTooLargeError

        raise BlobTooLargeError(f"upload of {size} bytes is larger than the limit of {limit} bytes")
    return session.store.writer(_hex(digest, "blob"), size, limit)


def _uploaded(session: Session, req: PublishRequest) -> list[NewArtifact]:
    """The request's artifacts, each a plain file name whose blob was uploaded with that size (derived
    kinds are left out: read here from the bytes when asked for, a client's word is not taken)."""
    from imageci.store.catalog import NewArtifact

    artifacts = []
    for a in req.artifacts:
        if a.kind in DERIVED:
            continue
        if not FILENAME.fullmatch(a.filename):
            raise UsageError(f"bad artifact file name {a.filename[:80]!r}: one plain file name (letters, digits, "
                             "'.', '_', '+', '-'), no directories")
        if not KIND.fullmatch(a.kind):
            raise UsageError(f"bad artifact kind {a.kind[:40]!r}")
        digest = _hex(a.digest, f"artifact {a.filename}")
        path = session.store.path(digest)
        if not path.is_file():
            raise UsageError(f"artifact {a.filename}: blob sha256:{digest} was not uploaded (PUT it first)")
        if path.stat().st_size != a.size:
            raise UsageError(f"artifact {a.filename}: blob sha256:{digest} has {path.stat().st_size} bytes, "
                             f"not {a.size}")
        artifacts.append(NewArtifact(a.kind, a.filename, digest, a.size))
    return artifacts


def _check_image_bytes(session: Session, artifacts: list[NewArtifact], image: str) -> None:
    """The image digest is its rootfs's, or its disk's (a disk image, checked before anything boots it)."""
    disks = [a for a in artifacts if a.kind == DISK]
    if disks:
        if len(disks) > 1 or disks[0].digest != image or not any(a.kind == ROOTFS for a in artifacts):
            raise UsageError(f"a disk image has one {DISK!r} artifact, whose digest is the image's "
                             f"(sha256:{image}), and a {ROOTFS!r} artifact")
        from imageci.formats.qcow2 import check_qcow2

        disk = session.store.path(image)
        try:
            check_qcow2(disk)
        except UsageError as exc:
            raise UsageError(str(exc).replace(str(disk), f"the disk sha256:{image[:12]}")) from None
    elif not any(a.digest == image and a.kind == ROOTFS for a in artifacts):
        raise UsageError(f"the image digest sha256:{image} must be that of its {ROOTFS!r} artifact")


def publish(session: Session, req: PublishRequest, *, by: Principal = LOCAL) -> Published:
    """Register the version whose artifacts were uploaded, on ``testing``, in one transaction. A new
    product is made in ``by``'s namespace; an existing one must be in a namespace ``by`` publishes to."""
    from imageci.formats import lxdimage

    _may_publish(by)
    ref = parse_ref(req.name)
    if ref.name != req.name:
        raise UsageError(f"bad image name {req.name!r}: lowercase letters, digits, '.' and '-'")
    image = _hex(req.digest, "digest")
    if not ARCH.fullmatch(req.architecture):
        raise UsageError(f"bad architecture {req.architecture!r}")
    artifacts = _uploaded(session, req)
    _check_image_bytes(session, artifacts, image)
    names = [a.filename for a in artifacts]
    if len(set(names)) != len(names):
        raise UsageError("artifact file names must be unique")
    existing = [v for v, _size in lookups.versions(session.reader, req.name)]
    namespace = existing[0].namespace if existing else (by.namespace or DEFAULT_NAMESPACE)
    by.require(Scope.PUBLISH, namespace, f"publish {req.name!r}")
    build_info = dict(req.build_info)
    lxd = lxdimage.checked_info(session.store, artifacts, build_info.pop("lxd", None))
    if lxd is not None:
        build_info["lxd"] = lxd
    catalog = session.catalog
    found = catalog.find_by_digest(req.name, image)
    created = found is None
    version = found or catalog.register_version(
        req.name, image, artifacts, input_hash=req.input_hash, definition=req.definition,
        build_info=build_info, architecture=req.architecture, namespace=namespace,
        actor=None if by == LOCAL else by.name)
    return Published(image=f"{req.name}@{version.serial}", digest=f"sha256:{version.digest}", state=version.state,
                     namespace=namespace, created=created)


class Destination(Protocol):
    """Where ``push`` publishes to: a server's API (``client.remote.ApiClient``)."""

    def blob_size(self, digest: str) -> int | None: ...

    def put_blob(self, digest: str, size: int, chunks: Iterable[bytes]) -> None: ...

    def publish(self, req: PublishRequest) -> Published: ...


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def push(session: Session, ref: str, to: Destination) -> Published:
    """Publish the local version ``ref`` to a server: upload each artifact it lacks (streamed from the
    store, never whole in memory; the server checks every byte against the digest), then commit."""
    version = session.catalog.resolve(ref)
    sent = [a for a in version.artifacts if a.kind not in DERIVED]
    for a in sent:
        if to.blob_size(a.digest) != a.size:
            to.put_blob(a.digest, a.size, _chunks(session.store.path(a.digest)))
    req = PublishRequest(name=version.product.name, digest=version.digest, architecture=version.architecture,
                         definition=version.definition, build_info=json.loads(version.build_info or "{}"),
                         input_hash=version.input_hash,
                         artifacts=[ArtifactIn(kind=a.kind, filename=a.filename, digest=a.digest, size=a.size)
                                    for a in sent])
    return to.publish(req)
