"""The host's programs imageci runs: found on PATH or in the sbin directories (root's PATH may
lack them), or a setup error that names the Debian package to install."""

from __future__ import annotations

import os
import shutil

from imageci.errors import HostSetupError


def find_tool(name: str) -> str | None:
    """The path of the program ``name``, or None."""
    return shutil.which(name) or next((p for d in ("/usr/sbin", "/sbin") if os.path.exists(p := f"{d}/{name}")),
                                      None)


def host_tool(name: str, package: str) -> str:
    """The path of the program ``name``, which Debian's ``package`` installs."""
    path = find_tool(name)
    if not path:
        raise HostSetupError(f"{name} is not installed: run scripts/host-setup.sh (apt-get install {package})")
    return path
