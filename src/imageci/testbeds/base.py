"""The testbed protocol: the one narrow waist every backend implements.

Modelled on autopkgtest's virtualisation-server verbs. Test kinds only ever
see a :class:`Testbed`; they never know which backend they run on.

Capability words (shared with DEP-8 restrictions later):

``root``                 commands run as uid 0 inside the testbed
``revert``               ``revert()`` is cheap (copy-on-write)
``isolation-container``  own process tree with an init (services can start)
``isolation-machine``    a whole machine (kernel, boot, reboot)
``network``              may reach the outside network (a testbed made for a test that needs it)
``arch:<deb-arch>``      architecture of the image
``pristine``             the image's files as built: no init has run in it yet
``limits``               memory, pids and disk limits are enforced (``definitions.limits``)
``privileged``           a test may opt out of the default hardening
``reboot``               ``reboot()`` and ``power_off()``: the machine restarts (or stops) through its firmware
``cloud-init``           the testbed handed the guest a cloud-init seed (``cloud_seed()`` says what was in it)
``ipv6``                 the testbed's network offers IPv6 to the guest

The words live in :mod:`imageci.capabilities`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imageci.definitions.limits import DEFAULTS, Limits
from imageci.formats.oci import ImageConfig


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
class LxdFile:
    """One file of a version's LXD form, as its feed lists it."""

    kind: str  # lxd-metadata, incus-metadata, squashfs
    filename: str
    sha256: str
    size: int
    path: Path  # the blob (LXD checks its sha256 and the fingerprint when it downloads it)


@dataclass(frozen=True)
class LxdForm:
    """A version's LXD form (``build.lxdimage``): what the LXD testbed serves its daemon."""

    serial: str
    os: str
    release: str
    variant: str
    fingerprint: str  # sha256(metadata ‖ squashfs): LXD's own name for the image
    files: tuple[LxdFile, ...]


@dataclass(frozen=True)
class ImageHandle:
    """What a backend needs to know about the image under test."""

    digest: str
    name: str
    rootfs_tar: Path  # verified blob path
    architecture: str = "amd64"
    config: ImageConfig | None = None  # the image's runtime configuration (None: imageci's default for a rootfs)
    lxd: LxdForm | None = None  # its LXD form, when it has one
    lxd_absent: str = "it has no LXD form"  # why not, when it has none
    disk: Path | None = None  # a disk image version's verified qcow2 (booted through its firmware), else None
    firmware: tuple[str, ...] = ()  # what the disk boots with: "uefi", "bios" (most preferred first)
    pins: tuple[object, ...] = ()  # the store's holds on these files (a cache never evicts them while held)


@dataclass(frozen=True)
class CloudSeed:
    """What a testbed told the guest's cloud-init (a NoCloud seed): what ``cloud-init-done`` and
    ``dns-configured`` hold the guest to."""

    instance_id: str
    hostname: str
    nonce_file: str  # the user-data's write_files put ``nonce`` here
    nonce: str
    dns_name: str  # a name the testbed's name server answers, and its IPv4 address
    dns_address: str


@dataclass(frozen=True)
class PowerOff:
    """How a machine took ``power_off()``: ``seconds`` until it was off (None: it was still running at
    the timeout and was pulled), and what its console said meanwhile."""

    seconds: float | None
    console: str


class Testbed(ABC):
    """One live, isolated environment made from an image. Whether its commands reach the
    network was decided when it was made, from the test's needs (:func:`imageci.capabilities.access`)."""

    name: str

    @abstractmethod
    def capabilities(self) -> frozenset[str]: ...

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
             stdin: bytes | None = None, cwd: str | None = None) -> ExecResult: ...

    @abstractmethod
    def copy_in(self, src: Path, dest: str) -> None: ...

    @abstractmethod
    def copy_out(self, src: str, dest: Path) -> None: ...

    @abstractmethod
    def revert(self) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Remove the testbed; also kills running commands, and is safe from another thread."""

    def attached(self, argv: Sequence[str], *, tty: bool, fds: tuple[int, int, int],
                 env: Mapping[str, str] | None = None) -> int:
        """Run ``argv`` in the testbed on the host's ``fds`` (stdin, stdout, stderr) until it exits, and return its
        exit status: a person's shell or command (``imageci shell``, ``attach``), never a test's. With ``tty``
        the fds are a pty of imageci's own (``testbeds.terminal``) and the command gets a terminal inside. The
        same isolation and limits as :meth:`exec`; nothing is captured."""
        raise NotImplementedError(f"testbed {self.name} cannot attach a terminal")

    def written_since(self, since: float) -> list[str] | None:
        """The regular files written in the testbed since ``since`` (Unix time; paths inside), read on the host
        without entering it (its copy-on-write layer): None where the host cannot see them. Lets imageci look
        for core dumps around a test without a command of its own in the testbed (``checks.complaints``)."""
        return None

    def limit_notes(self) -> list[str]:
        """What limits struck since the last call, as sentences that name each limit
        (memory, pids, disk, output): the engine puts them in the verdict's reason."""
        return []

    def console_log(self) -> str | None:
        """The machine's console output so far (None: this testbed has no console)."""
        return None

    # Whole machines (the ``reboot`` capability): a restart or a power-off, through the firmware.
    def reboot(self, timeout: float | None = None) -> None:
        """Restart the machine (the guest's own ``reboot``) and wait until it answers again, at most
        ``timeout`` seconds (default: the testbed's boot timeout). Only with ``reboot``."""
        raise NotImplementedError(f"testbed {self.name} cannot reboot")

    def power_off(self, timeout: float) -> PowerOff:
        """Ask the guest to power off (``systemctl poweroff``) and wait for the machine to stop, at most
        ``timeout`` seconds; then pull the plug. The testbed is gone afterwards. Only with ``reboot``."""
        raise NotImplementedError(f"testbed {self.name} cannot power off")

    def cloud_seed(self) -> CloudSeed | None:
        """The cloud-init seed this testbed handed the guest (None: it sent none)."""
        return None

    # Layers: a saved set of changes (an install of test dependencies) that fresh testbeds of the
    # same image stack under their writable layer instead of installing again.
    supports_layers: bool = False

    def reset(self, layer: Path | None = None) -> None:
        """Start again from the image (with ``layer`` under the writable layer when given): what
        was written so far is gone. Only where ``supports_layers``."""
        raise NotImplementedError(f"testbed {self.name} keeps no layers")

    def export_layer(self, dest: Path, exclude: Sequence[str] = ()) -> None:
        """Save what was written since the last :meth:`reset` as a layer at ``dest`` (a new
        directory), leaving out the ``exclude`` paths. Only where ``supports_layers``."""
        raise NotImplementedError(f"testbed {self.name} keeps no layers")


class Backend(ABC):
    """Makes testbeds of one kind for an image; registered by name (``registry.py``)."""

    name: str
    cost: Cost = Cost()  # what one testbed takes from the host (the engine's budget schedules by it)

    @abstractmethod
    def capabilities(self, image: ImageHandle) -> frozenset[str]: ...

    @abstractmethod
    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(), limits: Limits = DEFAULTS) -> Testbed:
        """A testbed for one test; ``needs`` decide its mode (systemd, privileged) and its access
        (:func:`imageci.capabilities.access`); ``limits`` are the test's memory, pids, disk and output."""

    def why_not(self, image: ImageHandle) -> str | None:
        """A reason no test can run on this backend for ``image`` (every test is then skipped with it)."""
        return None

    def lacking(self, words: Sequence[str]) -> str:
        """Why this host's testbeds of this kind lack the capability ``words`` ("" when it is by nature),
        said with the skip of a test that needs them."""
        return ""

    def expect(self, image: ImageHandle, testbeds: int) -> None:
        """The run is about to make ``testbeds`` testbeds of ``image`` (retries aside): a backend that makes
        them ahead of time makes no more than that."""
        return None

    def finish(self) -> None:
        """The run is over: drop templates, keys, warm machines."""
        return None

    def finish_but_held(self) -> None:
        """The run is over but testbeds of it are held for a person: drop what they do not need (warm machines);
        whoever holds them calls :meth:`finish` once they are gone."""
        return None
