"""Licenses as packages declare them, and their SPDX identifiers where there is one.

Debian declares licenses in ``/usr/share/doc/PACKAGE/copyright``: in the machine-readable format
(DEP-5) every ``License:`` field's first line names them with Debian's short names
(``GPL-2+``, ``BSD-3-clause``, ``Expat``); an older free-form file usually points at
``/usr/share/common-licenses/NAME``. Both are read; nothing is guessed from license texts."""

from __future__ import annotations

import re
from functools import cache

from license_expression import LicenseExpression, Licensing, get_spdx_licensing

LICENSE_LINE = re.compile(r"^License:[ \t]*(\S.*?)\s*$", re.MULTILINE)
COMMON = re.compile(r"/usr/share/common-licenses/([A-Za-z0-9][A-Za-z0-9.+_-]*[A-Za-z0-9+])")
SPLIT = re.compile(r"\s+(?:or|and|OR|AND)\s+|\s*[,|&]\s*")
EXCEPTION = re.compile(r"\s+with\s+.*$", re.IGNORECASE)

# Debian short names (and the common-licenses file names) that differ from an SPDX identifier.
DEBIAN_TO_SPDX = {
    "expat": "MIT", "artistic": "Artistic-1.0-Perl", "apache-2": "Apache-2.0", "bsd": "BSD-3-Clause",
    "gpl": "GPL-1.0-or-later", "lgpl": "LGPL-2.0-or-later", "mpl-1.1": "MPL-1.1", "mpl-2.0": "MPL-2.0",
    "zlib": "Zlib", "cc0": "CC0-1.0", "cc0-1.0": "CC0-1.0", "isc": "ISC", "psf-2": "PSF-2.0",
    "python": "PSF-2.0", "openssl": "OpenSSL", "x11": "X11", "bsd-4-clause-uc": "BSD-4-Clause-UC",
}
GNU = re.compile(r"(A?GPL|LGPL|GFDL)-?(\d(?:\.\d)?)(\+?)(?:\.0)?", re.IGNORECASE)


def declared(copyright_text: str) -> list[str]:
    """The license names a Debian copyright file declares, in first-seen order."""
    names: list[str] = []
    for m in LICENSE_LINE.finditer(copyright_text):
        for part in SPLIT.split(EXCEPTION.sub("", m.group(1))):
            part = part.strip().strip("()")
            if part and part not in names:
                names.append(part)
    if not names:
        for m in COMMON.finditer(copyright_text):
            if m.group(1) not in names:
                names.append(m.group(1))
    return names


@cache
def licensing() -> Licensing:
    """The SPDX license list (built once: building it takes a few hundredths of a second)."""
    return get_spdx_licensing()


@cache
def expression(text: str) -> LicenseExpression:
    """An SPDX license expression of identifiers joined with AND/OR (parsed once per text)."""
    return licensing().parse(text, simple=True)


@cache
def _spdx_ids() -> dict[str, str]:
    return {key.lower(): key for key, symbol in licensing().known_symbols.items()
            if not key.startswith("LicenseRef-") and not getattr(symbol, "is_exception", False)}


@cache
def spdx_id(name: str) -> str | None:
    """The SPDX license identifier a declared name stands for (None: there is none)."""
    lowered = name.lower()
    if lowered in DEBIAN_TO_SPDX:
        return DEBIAN_TO_SPDX[lowered]
    m = GNU.fullmatch(name)
    if m:
        family, number, plus = m.group(1).upper(), m.group(2), m.group(3)
        if "." not in number:
            number += ".0"
        candidate = f"{family}-{number}-{'or-later' if plus else 'only'}"
        return candidate if candidate.lower() in _spdx_ids() else None
    return _spdx_ids().get(lowered)
