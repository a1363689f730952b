"""The testbed protocol: the one narrow waist every backend implements.

Modelled on autopkgtest's virtualisation-server verbs. Test kinds only ever
see a :class:`Testbed`; they never know which backend they run on.

Capability words (shared with DEP-8 restrictions later):

``root``                 commands run as uid 0 inside the testbed
``revert``               ``revert()`` is cheap (copy-on-write)
``isolation-container``  own process tree with an init (services can start)
``isolation-machine``    a whole machine (kernel, boot, reboot)
``network``              may reach the outside network when a test asks
``arch:<deb-arch>``      architecture of the image
``pristine``             the image's files as built: no init has run in it yet
``limits``               memory, pids and disk limits are enforced (``definitions.limits``)
``privileged``           a test may opt out of the default hardening

The words live in :mod:`imageci.capabilities`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from imageci.build.oci import ImageConfig
from imageci.definitions.limits import DEFAULTS, Limits


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None  # None when the command was killed for its timeout
    stdout: bytes
    stderr: bytes
    duration: float
    timed_out: bool = False


@dataclass(frozen=True)
class Cost:
    """What one testbed of a kind takes from the host, for the engine's resource budget."""

    memory_mb: int = 128
    cpus: float = 0.5


@dataclass(frozen=True)
class ImageHandle:
    """What a backend needs to know about the image under test."""

    digest: str
    name: str
    rootfs_tar: Path  # verified blob path
    architecture: str = "amd64"
    config: ImageConfig | None = None  # the image's runtime configuration (None: imageci's default for a rootfs)


@runtime_checkable
class Testbed(Protocol):
    """One live, isolated environment made from an image."""

    name: str

    def capabilities(self) -> frozenset[str]: ...

    def open(self) -> None: ...

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None, network: bool = False) -> ExecResult: ...

    def copy_in(self, src: Path, dest: str) -> None: ...

    def copy_out(self, src: str, dest: Path) -> None: ...

    def revert(self) -> None: ...

    def close(self) -> None: ...

    def limit_notes(self) -> list[str]:
        """What limits struck since the last call, as sentences that name each limit
        (memory, pids, disk, output): the engine puts them in the verdict's reason."""
        ...


class Backend(Protocol):
    """Makes testbeds of one kind for an image; registered by name.

    Optional hooks a backend may define: ``why_not(image) -> str | None``
    (a reason no test can run on it for this image, e.g. no kernel to boot:
    every test is then skipped with it) and ``finish()`` (called when a run
    is over: drop templates, keys, warm machines).
    """

    name: str

    def capabilities(self, image: ImageHandle) -> frozenset[str]: ...

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(), limits: Limits = DEFAULTS) -> Testbed:
        """A testbed for one test; ``needs`` lets a backend pick a mode (systemd, network,
        privileged); ``limits`` are the test's memory, pids, disk and output limits."""
        ...
