"""What a build depends on, hashed: the definition's image-relevant fields, the
builder's version and the mirror's state (its Release file date).

Two builds with the same input hash are expected to produce the same bytes, so
the second is skipped. The gate and the test suite are not inputs: changing a
test does not rebuild the image.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache

from debian.deb822 import Deb822

import imageci
from imageci.definitions.image import ImageDefinition
from imageci.errors import BuildError

# build.bootdisk's version, in a disk image's input hash: bump it when the same inputs make other disk
# bytes (2: the ESP has the volume id its fstab line names)
DISK_WRITER = 2
# Fields that do not change the bytes of the image.
NON_INPUT_FIELDS = {"description", "keep", "tests", "retention", "schedule"}  # not what the bytes are made of


@dataclass(frozen=True)
class MirrorState:
    url: str
    suite: str
    date: str  # the Release file's Date field, verbatim
    epoch: int


def fetch_mirror_state(mirror: str, suite: str, timeout: float = 15.0) -> MirrorState:
    """Read the suite's (In)Release file from the mirror: its Date pins the archive state."""
    errors = []
    for name in ("InRelease", "Release"):
        url = f"{mirror.rstrip('/')}/dists/{suite}/{name}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/file mirror)
                text = resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{url}: {exc}")
            continue
        fields = Deb822(text.splitlines())
        date = fields.get("Date")
        if not date:
            errors.append(f"{url}: no Date field")
            continue
        parsed = email.utils.parsedate_to_datetime(date)
        return MirrorState(mirror, suite, date, int(parsed.timestamp()))
    raise BuildError(f"cannot read the mirror's Release file for suite {suite!r}: " + "; ".join(errors))


@cache
def mmdebstrap_version() -> str:
    try:
        out = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError("mmdebstrap is not installed: run scripts/host-setup.sh "
                         "(or apt-get install mmdebstrap)") from exc
    return out.strip()


def builder_id() -> str:
    return f"imageci {imageci.__version__}; {mmdebstrap_version()}"


def image_inputs(definition: ImageDefinition) -> dict[str, object]:
    """One architecture's build inputs (a definition from ``per_architecture``: ``architectures`` is
    unset, as in every definition before it existed, so their hashes stay the same; so are ``format``
    and ``disk`` for a rootfs image)."""
    defaults = {"architectures": None, "format": "rootfs", "disk": None}
    return {k: v for k, v in definition.model_dump(mode="json").items()
            if k not in NON_INPUT_FIELDS and not (k in defaults and v == defaults[k])}


def input_hash(definition: ImageDefinition, mirror: MirrorState) -> str:
    doc: dict[str, object] = {
        "definition": image_inputs(definition),
        "builder": builder_id(),
        "mirror": {"url": mirror.url, "suite": mirror.suite, "date": mirror.date},
    }
    if definition.format == "disk":
        doc["disk_writer"] = DISK_WRITER
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
