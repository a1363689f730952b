"""Pushing a version's OCI form somewhere real clients pull from, through skopeo.

Destinations, as skopeo names them::

    docker://REGISTRY/REPO[:TAG]   a registry (TAG: the version's serial when left out)
    oci:DIR[:TAG]                  an OCI image layout directory
    oci-archive:FILE[:TAG]         a tar of one

The layout pushed is ``build.oci``'s: one layer, the tested rootfs tarball
itself, uncompressed. ``skopeo copy --preserve-digests`` keeps every byte, so
the layer a client pulls has the digest imageci tested, and the manifest
digest skopeo reports is the one recorded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imageci.errors import HostSetupError, PushError, UsageError

FORMS = "docker://REGISTRY/REPO[:TAG], oci:DIR[:TAG] or oci-archive:FILE[:TAG]"


@dataclass(frozen=True)
class Destination:
    transport: str  # docker, oci, oci-archive
    location: str  # REGISTRY/REPO, DIR or FILE
    tag: str

    def __str__(self) -> str:
        if self.transport == "docker":
            return f"docker://{self.location}:{self.tag}"
        return f"{self.transport}:{self.location}:{self.tag}"


def parse_destination(text: str, default_tag: str) -> Destination:
    """``text`` as a destination; a usage error that names the forms when it is none of them."""
    if text.startswith("docker://"):
        ref = text.removeprefix("docker://")
        if "@" in ref:
            raise UsageError(f"{text}: push to a tag, not a digest (the digest is the registry's answer)")
        head, sep, tail = ref.rpartition(":")
        repo, tag = (head, tail) if sep and "/" not in tail else (ref, default_tag)
        if "/" not in repo or not repo.split("/", 1)[1] or not tag or any(c.isspace() for c in ref):
            raise UsageError(f"bad registry reference {text!r}: {FORMS}")
        return Destination("docker", repo, tag)
    for transport in ("oci-archive", "oci"):
        if text.startswith(f"{transport}:"):
            rest = text[len(transport) + 1:]
            head, sep, tail = rest.rpartition(":")
            path, tag = (head, tail) if sep and head and "/" not in tail else (rest, default_tag)
            if not path or not tag:
                raise UsageError(f"{text!r}: {FORMS}")
            return Destination(transport, path, tag)
    raise UsageError(f"{text!r} is not a destination: {FORMS}")


def copy_to(layout: Path, tag: str, dest: Destination, workdir: Path, *, tls_verify: bool = True,
            authfile: Path | None = None) -> str:
    """Copy ``layout:tag`` to ``dest`` byte for byte; the manifest digest at the destination."""
    if shutil.which("skopeo") is None:
        raise HostSetupError("pushing images needs skopeo: run scripts/host-setup.sh")
    if authfile is not None and not authfile.is_file():
        raise UsageError(f"{authfile}: no such authentication file")
    digestfile = workdir / "pushed-digest"
    command = ["skopeo", "copy", "--quiet", "--insecure-policy", "--preserve-digests", "--digestfile",
               str(digestfile)]
    if dest.transport == "docker":
        command += ["--retry-times", "2"]
        if not tls_verify:
            command.append("--dest-tls-verify=false")
        if authfile is not None:
            command += ["--dest-authfile", str(authfile)]
    elif dest.transport == "oci-archive":
        Path(dest.location).parent.mkdir(parents=True, exist_ok=True)
    command += [f"oci:{layout}:{tag}", str(dest)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False,
                              env=dict(os.environ, TMPDIR=str(workdir)))
    except subprocess.TimeoutExpired:
        raise PushError(f"skopeo did not finish pushing to {dest} within an hour") from None
    if done.returncode != 0:
        raise PushError(f"could not push to {dest}: {_reason(done.stderr)}")
    digest = digestfile.read_text().strip() if digestfile.is_file() else ""
    if not digest.startswith("sha256:"):
        raise PushError(f"skopeo pushed to {dest} but reported no manifest digest")
    return digest


def _reason(stderr: str) -> str:
    """skopeo's last error line, which names the cause (authentication, connection refused, …)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else "skopeo failed without a message"
    return text.removeprefix('time="').split('msg="', 1)[-1].rstrip('"')[-600:]
