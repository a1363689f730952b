"""Write an OCI image layout (image-spec v1.0) for a rootfs tarball.

The layer is the rootfs tarball itself, uncompressed, so its digest is the
image digest imageci already tracks: the bytes podman runs are the bytes that
were tested and promoted. Blobs are hard-linked from the artifact store when
possible. The config's timestamps come from SOURCE_DATE_EPOCH, so the same
rootfs gives the same manifest digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageConfig:
    """The runtime configuration an image carries (the OCI config's ``config``)."""

    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    cmd: tuple[str, ...] = ("/bin/sh",)
    entrypoint: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()  # "8080/tcp"
    volumes: tuple[str, ...] = ()

    def env_map(self) -> dict[str, str]:
        return {k: v for k, _, v in (e.partition("=") for e in self.env)}

    def as_oci(self) -> dict[str, object]:
        doc: dict[str, object] = {"Env": list(self.env), "Cmd": list(self.cmd), "Labels": dict(self.labels)}
        if self.entrypoint:
            doc["Entrypoint"] = list(self.entrypoint)
        if self.workdir:
            doc["WorkingDir"] = self.workdir
        if self.user:
            doc["User"] = self.user
        if self.exposed_ports:
            doc["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.volumes:
            doc["Volumes"] = {v: {} for v in self.volumes}
        return doc

    def to_json(self) -> bytes:
        return _json_bytes(self.as_oci())

    @classmethod
    def from_oci(cls, doc: dict[str, object]) -> ImageConfig:
        """The inverse of :meth:`as_oci` (an OCI config's ``config`` object)."""
        def strings(key: str) -> tuple[str, ...]:
            value = doc.get(key) or []
            return tuple(str(x) for x in value) if isinstance(value, list) else ()

        def keys(key: str) -> tuple[str, ...]:
            value = doc.get(key) or {}
            return tuple(sorted(str(k) for k in value)) if isinstance(value, dict) else ()

        labels = doc.get("Labels") or {}
        return cls(env=strings("Env"), cmd=strings("Cmd"), entrypoint=strings("Entrypoint"),
                   labels=tuple((str(k), str(v)) for k, v in labels.items()) if isinstance(labels, dict) else (),
                   workdir=str(doc.get("WorkingDir") or ""), user=str(doc.get("User") or ""),
                   exposed_ports=keys("ExposedPorts"), volumes=keys("Volumes"))


def image_config(name: str, digest: str) -> ImageConfig:
    """The configuration imageci gives an image it built from a rootfs."""
    return ImageConfig(labels=(("io.imageci.digest", digest), ("org.opencontainers.image.title", name)))


@dataclass(frozen=True)
class OciImage:
    layout: Path
    tag: str
    manifest_digest: str  # hex
    config_digest: str


def _json_bytes(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _place(blobs: Path, digest: str, src: Path | None = None, data: bytes | None = None) -> None:
    target = blobs / digest
    if target.exists():
        return
    tmp = blobs / f".{digest}.tmp"
    if src is not None:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    else:
        assert data is not None
        tmp.write_bytes(data)
    os.replace(tmp, target)


def write_layout(layout: Path, rootfs_tar: Path, rootfs_digest: str, *, tag: str, architecture: str = "amd64",
                 created_epoch: int = 0, config: ImageConfig | None = None,
                 annotations: Mapping[str, str] | None = None) -> OciImage:
    """``annotations``: the manifest's (``org.opencontainers.image.*``; what `imageci push` says of a version)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    created = datetime.fromtimestamp(created_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config_doc = {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": (config or ImageConfig()).as_oci(),
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{rootfs_digest}"]},
        "history": [{"created": created, "created_by": "imageci (mmdebstrap rootfs)"}],
    }
    config_bytes = _json_bytes(config_doc)
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    _place(blobs, rootfs_digest, src=rootfs_tar)
    _place(blobs, config_digest, data=config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{config_digest}", "size": len(config_bytes)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": f"sha256:{rootfs_digest}",
                    "size": rootfs_tar.stat().st_size}],
        **({"annotations": dict(sorted(annotations.items()))} if annotations else {}),
    }
    manifest_bytes = _json_bytes(manifest)
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    _place(blobs, manifest_digest, data=manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": f"sha256:{manifest_digest}",
                       "size": len(manifest_bytes), "annotations": {"org.opencontainers.image.ref.name": tag},
                       "platform": {"architecture": architecture, "os": "linux"}}],
    }
    tmp = layout / ".index.json.tmp"
    tmp.write_bytes(_json_bytes(index))
    os.replace(tmp, layout / "index.json")
    return OciImage(layout, tag, manifest_digest, config_digest)
