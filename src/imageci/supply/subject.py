"""The image a bill of materials describes, as the SBOM formats name it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

TOOL = "imageci"
NAMESPACE = uuid.UUID("5b1f2a5e-7c1e-4d7e-9a43-1d2f9c6e0b7a")  # imageci's: document names from digests


@dataclass(frozen=True)
class Subject:
    name: str  # the product
    serial: str
    digest: str  # sha256 hex of the image's bytes
    architecture: str
    created: datetime  # the version's creation: an SBOM of the same version is the same document

    @property
    def label(self) -> str:
        return f"{self.name}@{self.serial}"

    def document_uuid(self, form: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, f"{form}:{self.name}:{self.serial}:{self.digest}")
