"""The image definition (``image.yaml``): what to build and which tests gate it."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from imageci.definitions.yamlsource import load_yaml, validate
from imageci.errors import SourceError, UsageError
from imageci.sizes import parse_size

NAME_RE = r"^[a-z0-9][a-z0-9.-]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunStep(_Strict):
    """Run a shell command inside the new root (chroot)."""

    run: str


class WriteStep(_Strict):
    """Write a file with given content into the image."""

    write: str = Field(description="absolute path inside the image")
    content: str
    mode: str = "0644"

    @field_validator("write")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or ".." in Path(v).parts:
            raise ValueError("must be an absolute path without '..'")
        return v

    @field_validator("mode")
    @classmethod
    def _octal(cls, v: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3,4}", v):
            raise ValueError("must be an octal mode like 0644")
        return v


def _step_kind(v: object) -> str | None:
    if isinstance(v, dict):
        for kind in ("run", "write"):
            if kind in v:
                return kind
        return None
    return "run" if isinstance(v, RunStep) else "write" if isinstance(v, WriteStep) else None


CustomizeStep = Annotated[
    Annotated[RunStep, Tag("run")] | Annotated[WriteStep, Tag("write")],
    Discriminator(_step_kind, custom_error_type="step_kind",
                  custom_error_message="a step needs one of the keys 'run' or 'write'"),
]


_PACKAGE = r"[a-z0-9][a-z0-9+.-]+(:[a-z0-9]+)?(=[A-Za-z0-9.+~:-]+)?"
_ARCH = r"[a-z0-9]{1,32}"
# A package with an optional architecture restriction, as in Build-Depends: "linux-image-arm64 [arm64]",
# "grub-pc [amd64 i386]", "foo [!s390x]" (all listed, or none negated).
_QUALIFIED = re.compile(rf"(?P<name>{_PACKAGE})(?:\s+\[(?P<arches>\s*!?{_ARCH}(?:\s+!?{_ARCH})*\s*)\])?")


def _package_name(p: str) -> str:
    m = _QUALIFIED.fullmatch(p.strip())
    if not m:
        raise ValueError(f"not a Debian package name (with an optional [arch …] restriction): {p!r}")
    arches = (m.group("arches") or "").split()
    if arches and len({a.startswith("!") for a in arches}) > 1:
        raise ValueError(f"{p!r}: an architecture restriction lists architectures or excludes them, not both")
    return p.strip()


def package_applies(package: str, architecture: str) -> str | None:
    """The package name when ``package`` (as written in a definition) is installed on
    ``architecture``, else None."""
    m = _QUALIFIED.fullmatch(package)
    assert m is not None
    arches = (m.group("arches") or "").split()
    if not arches:
        return m.group("name")
    if arches[0].startswith("!"):
        return None if f"!{architecture}" in arches else m.group("name")
    return m.group("name") if architecture in arches else None


PackageName = Annotated[str, AfterValidator(_package_name)]


Severity = Literal["unimportant", "low", "medium", "high", "critical", "unknown"]


class AllowedVuln(_Strict):
    """A known vulnerability accepted until a date, with the reason (shown wherever it is waived)."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9._:-]{1,63}$", description="CVE-…, DSA-…, an OSV id")
    reason: str = Field(min_length=1)
    expires: date = Field(description="the last day it applies")


class VulnGate(_Strict):
    """Which known vulnerabilities block promotion: those of a blocking severity (with a fix
    available, unless ``only_fixed: false``), minus the allowed ones."""

    block: list[Severity] = Field(default_factory=lambda: list[Severity](["high", "critical"]), min_length=1)
    only_fixed: bool = True
    allow: list[AllowedVuln] = Field(default_factory=list)


class ComplianceGate(_Strict):
    """The minimum OpenSCAP score (0–100) of imageci's Debian 12 baseline (or another profile of it)."""

    min_score: float = Field(ge=0, le=100)
    profile: str = Field(default="xccdf_dev.imageci_profile_baseline", pattern=r"^[A-Za-z0-9_.:-]{1,255}$")


class Gate(_Strict):
    """Which checks must pass, on which testbeds, before promotion to stable, and which known
    vulnerabilities block it."""

    tests: Literal["all"] | list[str] = "all"
    testbeds: list[str] = Field(default_factory=lambda: ["sandbox"], min_length=1)
    vulnerabilities: VulnGate | None = None
    compliance: ComplianceGate | None = None
    reproducible: bool = False  # the newest `imageci repro` rebuilt these bytes bit for bit
    # failures the gate accepts: `always-failed` (it failed on the current stable version too); each is named
    allow: list[Literal["always-failed"]] = Field(default_factory=list)


Firmware = Literal["uefi", "bios"]
DISK_ARCHITECTURES = ("amd64",)  # GRUB for x86_64 UEFI and i386-pc BIOS


class DiskSpec(_Strict):
    """A bootable disk (``format: disk``): GPT with a BIOS boot partition, an EFI system partition and
    the root filesystem, GRUB for the firmware it lists, stored as qcow2."""

    size: str = Field(default="2G", description="the whole disk: 2G, 1500M; cloud-init may grow the root "
                                                "partition to a bigger virtual disk later")
    firmware: list[Firmware] = Field(default_factory=lambda: list[Firmware](["uefi", "bios"]), min_length=1)
    kernel_args: str = Field(default="", pattern=r"^[^\n\r'\"\\;{}$]*$",
                             description="appended to the kernel command line in grub.cfg")

    @field_validator("size")
    @classmethod
    def _size(cls, v: str) -> str:
        try:
            n = parse_size(v)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if n < 512 << 20:
            raise ValueError("a disk image needs at least 512M")
        return v

    @field_validator("firmware")
    @classmethod
    def _unique(cls, v: list[Firmware]) -> list[Firmware]:
        if len(set(v)) != len(v):
            raise ValueError("lists a firmware twice")
        return v

    @property
    def bytes(self) -> int:
        return parse_size(self.size)


class Retention(_Strict):
    """How long a product's versions, their bytes and their results are kept (``imageci retention``). The
    newest ``keep`` stable versions and pinned versions are always kept."""

    testing_days: int = Field(default=14, ge=1, description="a testing version older than this that never passed "
                                                            "becomes inactive")
    keep_days: int = Field(default=30, ge=0, description="an inactive version older than this is deleted (its "
                                                         "bytes; its record stays); younger ones are kept")
    logs_days: int = Field(default=90, ge=1, description="test logs older than this are dropped, except those of "
                                                         "stable and pinned versions")
    attempts_days: int = Field(default=365, ge=1, description="results older than this are removed once no "
                                                              "version holding their bytes is kept")


class TestsSection(_Strict):
    __test__ = False
    suite: str = Field(description="suite directory, relative to the definition file")
    gate: Gate = Field(default_factory=Gate)


class ImageDefinition(_Strict):
    name: str = Field(pattern=NAME_RE)
    description: str = ""
    distribution: Literal["debian", "ubuntu"] = "debian"
    suite: str = Field(pattern=r"^[a-z][a-z0-9-]*$")
    variant: Literal["extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important",
                     "debootstrap", "standard"] = "minbase"
    architecture: str = Field(default="amd64", pattern=r"^[a-z0-9]+$")
    architectures: list[Annotated[str, Field(pattern=r"^[a-z0-9]+$")]] | None = Field(
        default=None, min_length=1,
        description="build one product per architecture, named NAME-ARCH; a version of one is promotable only "
                    "when the versions built with it for every other architecture pass their gates too")
    mirror: str = "http://deb.debian.org/debian"
    components: list[str] = Field(default_factory=lambda: ["main"], min_length=1)
    packages: list[PackageName] = Field(default_factory=list)
    customize: list[CustomizeStep] = Field(default_factory=list)
    source_date_epoch: int | None = Field(
        default=None, ge=0, description="fixed timestamp; default: the mirror's Release date"
    )
    keep: int = Field(default=3, ge=1, description="stable versions kept active per product")
    retention: Retention = Field(default_factory=Retention)
    schedule: str | None = Field(default=None, description="a cron expression (5 fields, UTC): when `imageci "
                                                           "scheduler` runs this definition's pipeline")
    format: Literal["rootfs", "disk"] = Field(
        default="rootfs", description="rootfs: a root filesystem tarball; disk: a bootable disk image (qcow2)")
    disk: DiskSpec | None = None
    tests: TestsSection | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return None
        from croniter import croniter

        if not croniter.is_valid(v) or (len(v.split()) != 5 and v not in ("@hourly", "@daily", "@weekly",
                                                                          "@monthly", "@yearly")):
            raise ValueError(f"not a cron expression of 5 fields (minute hour day month weekday), e.g. '0 4 * * *', "
                             f"or @hourly, @daily, @weekly, @monthly: {v!r}")
        return v

    @model_validator(mode="after")
    def _disk(self) -> ImageDefinition:
        if self.format == "rootfs":
            if self.disk is not None:
                raise ValueError("'disk' is for 'format: disk'")
            return self
        for arch in self.architectures or [self.architecture]:
            if arch not in DISK_ARCHITECTURES:
                raise ValueError(f"'format: disk' is made for {', '.join(DISK_ARCHITECTURES)} only, not {arch}")
        if not any((package_applies(p, self.architecture) or "").startswith("linux-image-") for p in self.packages):
            raise ValueError("'format: disk' boots the image's own kernel: list one in 'packages' "
                             "(linux-image-amd64, or linux-image-cloud-amd64)")
        return self

    @property
    def disk_spec(self) -> DiskSpec | None:
        """The disk to make (None for a rootfs image)."""
        if self.format != "disk":
            return None
        return self.disk or DiskSpec()

    @model_validator(mode="after")
    def _mirror_scheme(self) -> ImageDefinition:
        if not re.match(r"^(https?|file)://", self.mirror):
            raise ValueError("mirror must be an http(s):// or file:// URL")
        return self

    @model_validator(mode="after")
    def _one_way_to_name_architectures(self) -> ImageDefinition:
        if self.architectures is None:
            return self
        if "architecture" in self.model_fields_set:
            raise ValueError("give 'architecture' (one product) or 'architectures' (one product per "
                             "architecture), not both")
        if len(set(self.architectures)) != len(self.architectures):
            raise ValueError("'architectures' lists an architecture twice")
        for arch in self.architectures:
            if not re.fullmatch(NAME_RE, f"{self.name}-{arch}"):
                raise ValueError(f"the product name {self.name}-{arch} is too long (at most 63 characters)")
        return self

    @property
    def multiarch(self) -> bool:
        """Whether this definition makes one product per architecture (``architectures``)."""
        return self.architectures is not None

    def product_for(self, architecture: str) -> str:
        return f"{self.name}-{architecture}" if self.multiarch else self.name

    def per_architecture(self, only: set[str] | None = None) -> list[ImageDefinition]:
        """What one build makes: a single-architecture definition per product (named NAME-ARCH when
        ``architectures`` is given), each with the packages that apply to its architecture;
        ``only`` keeps some architectures (``imageci build --arch``)."""
        arches = self.architectures or [self.architecture]
        unknown = sorted((only or set()) - set(arches))
        if unknown:
            raise UsageError(f"{self.name} is not built for {', '.join(unknown)} (it lists: {', '.join(arches)})")
        out = []
        for arch in arches:
            if only is not None and arch not in only:
                continue
            packages = [name for p in self.packages if (name := package_applies(p, arch)) is not None]
            out.append(self.model_copy(update={"name": self.product_for(arch), "architecture": arch,
                                               "architectures": None, "packages": packages}))
        return out


class LoadedDefinition(BaseModel):
    """A validated definition and where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    path: Path
    definition: ImageDefinition
    text: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def suite_dir(self) -> Path | None:
        if self.definition.tests is None:
            return None
        return (self.base_dir / self.definition.tests.suite).resolve()


def load_definition(path: Path) -> LoadedDefinition:
    src = load_yaml(path)
    definition = validate(ImageDefinition, src)
    if definition.tests is not None:
        suite = (path.parent / definition.tests.suite).resolve()
        if not suite.is_dir():
            raise SourceError(str(path), src.line_of(("tests", "suite")), f"no such directory: {suite}",
                              "tests.suite")
    return LoadedDefinition(path=path.resolve(), definition=definition, text=path.read_text(encoding="utf-8"))


def parse_definition(text: str, origin: str) -> ImageDefinition:
    """A definition from its stored text (a version's copy); ``origin`` names it in errors."""
    return validate(ImageDefinition, load_yaml(Path(origin), text))
