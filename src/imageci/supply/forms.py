"""The forms a bill of materials is written in (a small module: the CLI names them at start-up)."""

from __future__ import annotations

from enum import StrEnum


class BomFormat(StrEnum):
    TABLE = "table"  # for reading, in a terminal
    JSON = "json"  # imageci's own (supply.packages.Bom, with the image's name and digest)
    SPDX = "spdx"  # SPDX 2.3 JSON
    CYCLONEDX = "cyclonedx"  # CycloneDX 1.6 JSON
