"""Image references: ``NAME[:CHANNEL]``, ``NAME@VERSION`` or ``sha256:<digest>``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from imageci.errors import UsageError

_REF_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9.-]{0,62})(?::(?P<channel>[a-z]+)|@(?P<serial>[0-9A-Za-z._-]+))?$")


@dataclass(frozen=True)
class ImageRef:
    name: str | None = None
    channel: str | None = None
    serial: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        if self.digest:
            return f"sha256:{self.digest}"
        if self.serial:
            return f"{self.name}@{self.serial}"
        return f"{self.name}:{self.channel or 'testing'}"


def parse_ref(text: str) -> ImageRef:
    if text.startswith("sha256:"):
        digest = text.removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{7,64}", digest):
            raise UsageError(f"bad digest reference {text!r}: expected sha256:<hex>")
        return ImageRef(digest=digest)
    m = _REF_RE.match(text)
    if not m:
        raise UsageError(f"bad image reference {text!r}: expected NAME[:CHANNEL], NAME@VERSION or sha256:<digest>")
    if m.group("serial"):
        return ImageRef(name=m.group("name"), serial=m.group("serial"))
    return ImageRef(name=m.group("name"), channel=m.group("channel") or "testing")
