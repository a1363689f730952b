"""Where an imported image comes from, and reading an OCI image from there.

Sources, as skopeo names them::

    oci:DIR[:TAG]              an OCI image layout directory
    oci-archive:FILE[:TAG]     a tar of one
    docker-archive:FILE[:REF]  `docker save` / `podman save` output (through skopeo)
    docker://REGISTRY/NAME:TAG a registry (through skopeo)
    FILE                       a root filesystem tarball (.tar, .tar.gz, .tar.xz, .tar.zst, …)
    DIR                        an OCI layout directory (it has an ``oci-layout`` file)

Every manifest, config and layer read is checked against the digest that
names it. An index with several platforms yields the one of the wanted
architecture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imageci.errors import HostSetupError, UsageError
from imageci.formats.layers import DamagedImageError, Layer

OCI_TRANSPORTS = ("oci:", "oci-archive:", "docker-archive:", "docker://")
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}
REF_NAME = "org.opencontainers.image.ref.name"
MAX_JSON = 4 << 20  # a manifest, index or config larger than this is refused, not read

# OCI (Go) architecture and variant → the Debian architecture imageci names.
_ARCHES = {("amd64", ""): "amd64", ("arm64", ""): "arm64", ("arm64", "v8"): "arm64", ("386", ""): "i386",
           ("arm", "v7"): "armhf", ("arm", ""): "armhf", ("arm", "v6"): "armel", ("arm", "v5"): "armel",
           ("ppc64le", ""): "ppc64el", ("s390x", ""): "s390x", ("riscv64", ""): "riscv64",
           ("mips64le", ""): "mips64el", ("loong64", ""): "loong64"}


def debian_arch(architecture: str, variant: str = "") -> str:
    found = _ARCHES.get((architecture, variant)) or _ARCHES.get((architecture, ""))
    if found is None:
        raise UsageError(f"unsupported image architecture {architecture!r}{f' variant {variant!r}' if variant else ''}")
    return found


def oci_arch(debian: str) -> tuple[str, str]:
    for (arch, variant), name in _ARCHES.items():
        if name == debian:
            return arch, variant
    raise UsageError(f"unknown architecture {debian!r}")


@dataclass(frozen=True)
class SourceSpec:
    transport: str  # "tarball", "oci", "oci-archive", "docker-archive", "docker"
    location: str  # a path, or for docker the registry reference
    tag: str | None = None

    def __str__(self) -> str:
        if self.transport == "tarball":
            return self.location
        if self.transport == "docker":
            return f"docker://{self.location}"
        return f"{self.transport}:{self.location}" + (f":{self.tag}" if self.tag else "")


def _split_tag(rest: str) -> tuple[str, str | None]:
    """``PATH[:TAG]``: a final ``:x`` is a tag when it holds no ``/`` (skopeo's rule)."""
    head, sep, tail = rest.rpartition(":")
    if sep and head and "/" not in tail:
        return head, tail or None
    return rest, None


def parse_source(text: str) -> SourceSpec:
    if not text:
        raise UsageError("empty image source")
    if text.startswith("docker://"):
        ref = text[len("docker://"):]
        if not ref or any(c.isspace() for c in ref):
            raise UsageError(f"bad registry reference {text!r}: docker://REGISTRY/NAME[:TAG|@DIGEST]")
        return SourceSpec("docker", ref)
    for transport in ("oci-archive", "docker-archive", "oci"):
        if text.startswith(f"{transport}:"):
            rest = text[len(transport) + 1:]
            # docker-archive:FILE[:NAME:TAG] goes to skopeo as it is
            path, tag = (rest, None) if transport == "docker-archive" else _split_tag(rest)
            if not path:
                raise UsageError(f"{text!r}: no path after {transport}:")
            return SourceSpec(transport, path, tag)
    local = Path(text)
    if local.is_dir():
        if not (local / "oci-layout").is_file():
            raise UsageError(f"{text}: a directory that is not an OCI image layout (no oci-layout file)")
        return SourceSpec("oci", text)
    if not local.exists():
        raise UsageError(f"{text}: no such file (sources: FILE, DIR, oci:DIR[:TAG], oci-archive:FILE[:TAG], "
                         "docker-archive:FILE, docker://REF)")
    return SourceSpec("tarball", text)


@dataclass(frozen=True)
class OciImage:
    manifest_digest: str
    config: dict[str, Any]  # the whole image config (architecture, config, rootfs, history, …)
    config_digest: str
    layers: tuple[Layer, ...]
    architecture: str  # Debian's name

    @property
    def runtime(self) -> dict[str, Any]:
        """The config's ``config`` object: env, entrypoint, cmd, user, labels, …"""
        value = self.config.get("config") or {}
        return value if isinstance(value, dict) else {}


def _blob(layout: Path, descriptor: Any, what: str) -> tuple[Path, str]:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
        raise DamagedImageError(f"{what}: a descriptor without a digest")
    algo, _, digest = descriptor["digest"].partition(":")
    if algo != "sha256" or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DamagedImageError(f"{what}: unsupported digest {descriptor['digest'][:80]!r} (sha256 only)")
    path = layout / "blobs" / "sha256" / digest
    if not path.is_file():
        raise DamagedImageError(f"{what}: blob sha256:{digest[:12]} is missing from the layout")
    return path, digest


def _json_blob(layout: Path, descriptor: Any, what: str) -> tuple[dict[str, Any], str]:
    path, digest = _blob(layout, descriptor, what)
    if path.stat().st_size > MAX_JSON:
        raise DamagedImageError(f"{what}: {path.stat().st_size} bytes is too large for a {what}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != digest:
        raise DamagedImageError(f"{what}: its bytes do not match its digest sha256:{digest[:12]}")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise DamagedImageError(f"{what} sha256:{digest[:12]}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DamagedImageError(f"{what} sha256:{digest[:12]}: not a JSON object")
    return doc, digest


def _pick_platform(layout: Path, index: dict[str, Any], arch: str, what: str) -> Any:
    wanted = oci_arch(arch)
    manifests = index.get("manifests") or []
    for m in manifests:
        platform = m.get("platform") or {} if isinstance(m, dict) else {}
        if platform.get("os", "linux") == "linux" and (platform.get("architecture"), platform.get("variant", "")) in (
                wanted, (wanted[0], "")):
            return m
    have = sorted({f"{(m.get('platform') or {}).get('architecture')}" for m in manifests if isinstance(m, dict)})
    raise UsageError(f"{what} has no image for {arch} (it has: {', '.join(have) or 'none'}); pass --arch")


def read_layout(layout: Path, tag: str | None, arch: str) -> OciImage:
    """The image ``tag`` (or the only one) of the OCI layout at ``layout``, for ``arch`` when it is an
    index of several platforms."""
    index_path = layout / "index.json"
    try:
        index = json.loads(index_path.read_bytes())
    except OSError as exc:
        raise UsageError(f"{layout}: not an OCI image layout: {exc.strerror}") from None
    except ValueError as exc:
        raise DamagedImageError(f"{index_path}: not JSON: {exc}") from None
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise DamagedImageError(f"{index_path}: no manifests list")
    manifests = [m for m in index["manifests"] if isinstance(m, dict)]
    if tag is not None:
        manifests = [m for m in manifests if (m.get("annotations") or {}).get(REF_NAME) == tag]
        if not manifests:
            tags = sorted({str((m.get("annotations") or {}).get(REF_NAME)) for m in index["manifests"]
                           if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME)})
            raise UsageError(f"{layout}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})")
    if len(manifests) > 1:
        manifests = [_pick_platform(layout, {"manifests": manifests}, arch, str(layout))]
    if not manifests:
        raise UsageError(f"{layout}: the layout holds no image")
    descriptor = manifests[0]
    for _depth in range(4):
        doc, digest = _json_blob(layout, descriptor, "manifest")
        media = doc.get("mediaType") or descriptor.get("mediaType")
        if media in INDEX_TYPES or "manifests" in doc and "layers" not in doc:
            descriptor = _pick_platform(layout, doc, arch, f"index sha256:{digest[:12]}")
            continue
        if media not in MANIFEST_TYPES and "layers" not in doc:
            raise DamagedImageError(f"manifest sha256:{digest[:12]}: unsupported media type {media!r}")
        return _image(layout, doc, digest)
    raise DamagedImageError(f"{layout}: indexes nested too deeply")


def _image(layout: Path, manifest: dict[str, Any], manifest_digest: str) -> OciImage:
    config, config_digest = _json_blob(layout, manifest.get("config"), "config")
    layers_in = manifest.get("layers")
    if not isinstance(layers_in, list):
        raise DamagedImageError(f"manifest sha256:{manifest_digest[:12]}: no layers list")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    if diff_ids and len(diff_ids) != len(layers_in):
        raise DamagedImageError(f"config sha256:{config_digest[:12]} names {len(diff_ids)} diff ids for "
                                f"{len(layers_in)} layers")
    layers = []
    for n, descriptor in enumerate(layers_in):
        media = str(descriptor.get("mediaType", "")) if isinstance(descriptor, dict) else ""
        if "foreign" in media or "nondistributable" in media:
            raise UsageError(f"layer {n + 1} is a foreign layer ({media}): it is not in the image")
        path, digest = _blob(layout, descriptor, f"layer {n + 1}")
        diff = diff_ids[n].removeprefix("sha256:") if n < len(diff_ids) and isinstance(diff_ids[n], str) else None
        layers.append(Layer(path, digest, diff))
    arch = debian_arch(str(config.get("architecture") or "amd64"), str(config.get("variant") or ""))
    return OciImage(manifest_digest, config, config_digest, tuple(layers), arch)


def _data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    return tarfile.data_filter(member, dest)


def materialize(spec: SourceSpec, workdir: Path, arch: str, *, tls_verify: bool = True) -> tuple[Path, str | None]:
    """An OCI layout directory holding the image of ``spec`` (an ``oci:`` one as it is), and its tag;
    from a registry, the ``arch`` image of a multi-platform one."""
    if spec.transport == "oci":
        return Path(spec.location), spec.tag
    layout = workdir / "layout"
    if spec.transport == "oci-archive":
        try:
            with tarfile.open(spec.location, "r:*") as tar:
                tar.extractall(layout, filter=_data_filter)
        except FileNotFoundError:
            raise UsageError(f"{spec.location}: no such file") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise UsageError(f"{spec.location}: not an OCI archive: {exc}") from None
        return layout, spec.tag
    if shutil.which("skopeo") is None:
        raise HostSetupError(f"importing {spec.transport} images needs skopeo: apt-get install skopeo")
    if spec.transport == "docker-archive" and not Path(spec.location.split(":")[0]).is_file() \
            and not Path(spec.location).is_file():
        raise UsageError(f"{spec.location}: no such file")
    command = ["skopeo", "copy", "--quiet", "--insecure-policy"]
    if spec.transport == "docker":
        oarch, variant = oci_arch(arch)
        command += ["--retry-times", "2", "--override-os", "linux", "--override-arch", oarch,
                    *(["--override-variant", variant] if variant else [])]
        if not tls_verify:
            command.append("--src-tls-verify=false")
    command += [str(spec), f"oci:{layout}:imported"]
    env = dict(os.environ, TMPDIR=str(workdir))
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600, check=False)
    if done.returncode != 0:
        raise UsageError(f"skopeo could not read {spec}: {done.stderr.strip()[-800:]}")
    return layout, "imported"
