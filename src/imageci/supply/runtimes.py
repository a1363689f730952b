"""Which language runtimes an image has, read from its BOM, and whether a project's declared
constraints (definitions.runtimes) hold on it. A runtime is the package that gives its interpreter
or toolchain (``python3``, ``nodejs``, …); its version is the package's upstream version
(``3.11.2-1+b1`` → ``3.11.2``, ``1:18.19.0+dfsg-6`` → ``18.19.0``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from imageci.definitions.runtimes import RuntimeConstraint
from imageci.supply.ordering import compare
from imageci.supply.packages import Bom, Package

# The packages that give each runtime, by preference: a name, or a pattern whose newest match counts.
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {
    "python": ("python3", r"python3\.\d+", "python"),
    "node": ("nodejs",),
    "ruby": (r"ruby\d+\.\d+", "ruby"),
    "go": (r"golang-\d+\.\d+-go", "golang-go", "go", "golang"),
    "java": (r"openjdk-\d+-jre-headless", r"openjdk-\d+-jdk-headless", r"openjdk-\d+-jre", r"java-\d+-openjdk.*"),
    "perl": ("perl",),
    "php": (r"php\d+\.\d+-cli", "php-cli", "php"),
}
# Packages that belong to a runtime (its libraries, its standard library), for naming culprits.
RUNTIME_FAMILIES: dict[str, str] = {
    "python": r"(lib)?python3?(\.\d+)?(-.*)?",
    "node": r"nodejs(-.*)?|libnode\d*",
    "ruby": r"(lib)?ruby(\d+\.\d+)?(-.*)?",
    "go": r"golang(-.*)?|go",
    "java": r"openjdk-.*|default-j(re|dk).*|java-.*",
    "perl": r"perl(-.*)?|libperl.*",
    "php": r"php(\d+\.\d+)?(-.*)?",
}
INSTALL_HINT = {"python": "python3", "node": "nodejs", "ruby": "ruby", "go": "golang-go", "java": "openjdk-*-jre",
                "perl": "perl", "php": "php-cli"}
_UPSTREAM = re.compile(r"\d+(\.\d+)*")


def upstream_version(version: str) -> str:
    """The upstream part of a package version, as dotted numbers: ``2:1.19~1`` → ``1.19``,
    ``3.11.9-r0`` → ``3.11.9``; empty when it starts with no number."""
    v = version.split(":", 1)[1] if re.match(r"^\d+:", version) else version
    m = _UPSTREAM.match(v)
    return m.group(0) if m else ""


@dataclass(frozen=True)
class Runtime:
    tool: str
    version: str  # upstream, dotted numbers
    package: Package


def _newest(matches: list[Package]) -> Package:
    best = matches[0]
    for p in matches[1:]:
        if compare(p.type, p.version, best.version) > 0:
            best = p
    return best


def runtime_of(bom: Bom, tool: str) -> Runtime | None:
    """The image's ``tool`` runtime (None: none of its packages is installed)."""
    for pattern in RUNTIME_PACKAGES.get(tool, ()):
        matches = [p for p in bom.packages if re.fullmatch(pattern, p.name) and upstream_version(p.version)]
        if matches:
            p = _newest(matches)
            return Runtime(tool, upstream_version(p.version), p)
    return None


def satisfies(constraint: RuntimeConstraint, version: str) -> bool:
    """Whether the runtime ``version`` (dotted numbers) meets ``constraint``."""
    if constraint.kind == "prefix":
        want = constraint.spec.split(".")
        return version.split(".")[:len(want)] == want
    import nodesemver

    parts = (version.split(".") + ["0", "0"])[:3]
    return bool(nodesemver.satisfies(".".join(str(int(p)) for p in parts), constraint.spec, loose=True))


@dataclass(frozen=True)
class Unmet:
    constraint: RuntimeConstraint
    runtime: Runtime | None  # None: the image has no such runtime

    def describe(self) -> str:
        c = self.constraint
        if self.runtime is None:
            return f"{c.where} wants {c.describe()}; the image has no {c.tool} (no package {INSTALL_HINT[c.tool]})"
        p = self.runtime.package
        return (f"{c.where} wants {c.describe()}; the image has {c.tool} {self.runtime.version} "
                f"({p.name} {p.version})")


def unmet(constraints: list[RuntimeConstraint], bom: Bom) -> list[Unmet]:
    """The constraints ``bom``'s image does not meet."""
    out = []
    for c in constraints:
        runtime = runtime_of(bom, c.tool)
        if runtime is None or not satisfies(c, runtime.version):
            out.append(Unmet(c, runtime))
    return out


def in_family(tool: str, package: str) -> bool:
    """Whether ``package`` belongs to the ``tool`` runtime (its interpreter, libraries, standard library)."""
    pattern = RUNTIME_FAMILIES.get(tool)
    return bool(pattern and re.fullmatch(pattern, package))
