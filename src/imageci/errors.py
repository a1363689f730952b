"""Exceptions that carry the exit code the CLI turns them into."""

from __future__ import annotations

from imageci.exitcodes import ExitCode


class ImageciError(Exception):
    """Base class: a failure with a clear message for the user."""

    exit_code: ExitCode = ExitCode.ERROR
    log: bytes = b""  # what broke said on its way down (a VM's console): kept as the attempt's log


class UsageError(ImageciError):
    """Bad input from the user: arguments, files, references."""

    exit_code = ExitCode.USAGE


class SourceError(UsageError):
    """A problem in an input file, located at file:line."""

    def __init__(self, path: str, line: int | None, message: str, field: str | None = None) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        what = f"{field}: {message}" if field else message
        super().__init__(f"{where}: {what}")


class UnknownReferenceError(UsageError):
    """An image reference that matches nothing in the catalog."""


class BuildError(ImageciError):
    exit_code = ExitCode.BUILD_FAILED


class GateRefused(ImageciError):
    exit_code = ExitCode.GATE_REFUSED


class TestbedError(ImageciError):
    """The testbed broke (could not start, lost its process, could not copy)."""

    __test__ = False  # not a pytest test class
    exit_code = ExitCode.ERROR


class HostSetupError(ImageciError):
    """The host lacks a tool or permission a backend needs; the message names the fix."""

    exit_code = ExitCode.ERROR


class CatalogUnusableError(ImageciError):
    """The catalog cannot be used as it is (damaged, not ours, newer schema); nothing was changed."""

    exit_code = ExitCode.CATALOG_UNUSABLE


class Unauthenticated(ImageciError):
    """No valid credentials: an unknown, expired or revoked token (HTTP 401)."""

    exit_code = ExitCode.DENIED


class Forbidden(ImageciError):
    """Valid credentials without the scope, namespace or channel this needs (HTTP 403)."""

    exit_code = ExitCode.DENIED


class PushError(ImageciError):
    """A registry (or destination) refused a push or could not be reached; nothing was recorded."""

    exit_code = ExitCode.PUSH_FAILED


class ServerUnavailable(ImageciError):
    """The imageci server could not be reached (or a proxy before it answered 502/504): a request that
    may succeed when tried again (a worker waits and retries its writes)."""
