"""Testbed backends by name. Later backends (podman, qemu, ssh) register here."""

from __future__ import annotations

from collections.abc import Callable

from imageci.config import Settings
from imageci.errors import UsageError
from imageci.testbeds.base import Backend
from imageci.testbeds.sandbox import SandboxBackend

_FACTORIES: dict[str, Callable[[Settings], Backend]] = {
    "sandbox": lambda s: SandboxBackend(s.rootfs_cache, s.tmp_dir / "sandboxes"),
}


def backend_names() -> list[str]:
    return sorted(_FACTORIES)


def make_backend(name: str, settings: Settings) -> Backend:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UsageError(f"unknown testbed {name!r}; available: {', '.join(backend_names())}") from None
    return factory(settings)
