"""Version ordering as each package manager defines it: Debian's (python-debian), and rpm's
segment comparison (rpmvercmp), used for rpm and apk versions. Versions are never compared as
strings: ``1.10`` is newer than ``1.9``, ``1.0~rc1`` older than ``1.0``."""

from __future__ import annotations

import re

from debian.debian_support import version_compare

SEGMENT = re.compile(r"(\d+|[A-Za-z]+|~|\^)")
DEBIAN_VERSION = re.compile(r"(?:\d+:)?[0-9][A-Za-z0-9.+~:-]*")  # an upstream part starts with a digit


def is_debian_version(text: str) -> bool:
    return DEBIAN_VERSION.fullmatch(text) is not None


def _rpmvercmp(a: str, b: str) -> int:
    if a == b:
        return 0
    sa, sb = SEGMENT.findall(a), SEGMENT.findall(b)
    while sa or sb:
        if sa and sa[0] == "~" or sb and sb[0] == "~":  # ~ sorts before anything, even the end
            if not (sa and sa[0] == "~"):
                return 1
            if not (sb and sb[0] == "~"):
                return -1
            sa, sb = sa[1:], sb[1:]
            continue
        if not sa or not sb:
            return 1 if sa else -1
        x, y = sa.pop(0), sb.pop(0)
        if x.isdigit() != y.isdigit():
            return 1 if x.isdigit() else -1  # a number is newer than letters
        if x.isdigit():
            x, y = x.lstrip("0") or "0", y.lstrip("0") or "0"
            if len(x) != len(y):
                return 1 if len(x) > len(y) else -1
        if x != y:
            return 1 if x > y else -1
    return 0


def _rpm_compare(a: str, b: str) -> int:
    def split(v: str) -> tuple[int, str, str]:
        epoch, _, rest = v.rpartition(":") if ":" in v else ("0", "", v)
        version, _, release = rest.partition("-")
        return int(epoch) if epoch.isdigit() else 0, version, release
    ea, va, ra = split(a)
    eb, vb, rb = split(b)
    if ea != eb:
        return 1 if ea > eb else -1
    return _rpmvercmp(va, vb) or _rpmvercmp(ra, rb)


def compare(kind: str, a: str, b: str) -> int:
    """<0, 0, >0 as version ``a`` is older than, the same as, or newer than ``b`` for package type
    ``kind`` (deb, rpm, apk)."""
    if kind == "deb":
        return int(version_compare(a, b))
    if kind == "apk":  # 1.36.1-r2: the version, then the release number
        return _rpm_compare(a.replace("-r", "-", 1), b.replace("-r", "-", 1))
    return _rpm_compare(a, b)
