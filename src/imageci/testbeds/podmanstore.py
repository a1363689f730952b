"""podman as imageci runs it (runc, its flags, its failures explained) and the images in a home's
podman storage: each version copied in once with skopeo, by digest, from an OCI layout written next to
the store (no character of the home's path parsed as a reference), under a storage configuration that
skips containers/storage's own mount of its overlay directory."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from imageci.errors import HostSetupError, TestbedError
from imageci.formats.oci import image_config, write_layout
from imageci.testbeds.base import ImageHandle

SETUP_HINT = "run scripts/host-setup.sh (installs podman + runc and writes /etc/containers/containers.conf.d/" \
             "50-imageci.conf)"


def podman_path() -> str:
    path = shutil.which("podman")
    if not path:
        raise HostSetupError(f"podman is not installed: {SETUP_HINT}")
    return path


def runtime_flags(nproc: int = 4096) -> list[str]:
    """runc, and rlimits no higher than what this host allows: the open-files
    limit is this process's own hard limit; the process limit is the testbed's
    pids budget (podman's conmon may run with a lower nproc than we do)."""
    flags = ["--runtime", shutil.which("runc") or "runc"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = hard if hard != resource.RLIM_INFINITY else soft
    if nofile != resource.RLIM_INFINITY:
        flags += ["--ulimit", f"nofile={nofile}:{nofile}"]
    _, hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard_nproc != resource.RLIM_INFINITY:
        nproc = min(nproc, hard_nproc)
    return [*flags, "--ulimit", f"nproc={nproc}:{nproc}"]


def explain_failure(stderr: str) -> str | None:
    """Map podman/runtime errors that mean 'host misconfigured' to the fix."""
    s = stderr.lower()
    if "setting rlimit" in s:
        return ("podman could not set the container's rlimits (they exceed this host's limits): "
                f"{SETUP_HINT}, or lower default_ulimits in containers.conf")
    if "crun" in s and "cgroup" in s:
        return f"crun cannot run on this host's cgroup layout; podman must use runc: {SETUP_HINT}"
    if "executable file `runc` not found" in s or "no such file or directory: runc" in s:
        return f"runc is not installed: {SETUP_HINT}"
    return None


def run_podman(argv: Sequence[str], *, timeout: float | None = 120, check: bool = True, input: bytes | None = None,
         env: Mapping[str, str] | None = None, cwd: Path | None = None,
         stdin: IO[bytes] | None = None) -> subprocess.CompletedProcess[bytes]:
    """``podman ARGV``; its standard input ``input`` (bytes) or the file ``stdin``."""
    try:
        res = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input,
                             env=dict(env) if env is not None else None, cwd=cwd, stdin=stdin)
    except subprocess.TimeoutExpired as exc:
        raise TestbedError(f"podman did not answer within {timeout}s: {' '.join(argv[:4])}") from exc
    if check and res.returncode != 0:
        err = res.stderr.decode("utf-8", "replace").strip()
        hint = explain_failure(err)
        if hint:
            raise HostSetupError(hint)
        raise TestbedError(f"{' '.join(argv[:3])} failed ({res.returncode}): {err[-800:]}")
    return res


def storage_conf(graphroot: Path, runroot: Path, image_stores: Sequence[Path] = ()) -> str:
    """A podman storage of this home's own. ``skip_mount_home``: containers/storage would otherwise bind-mount
    its ``overlay`` directory onto itself and leave that mount behind for ever, a mount point in the home
    that nothing can remove (``imageci gc``, a home's removal, a test's clean-up)."""
    stores = ", ".join(json.dumps(str(p)) for p in image_stores)
    return (f'[storage]\ndriver = "overlay"\ngraphroot = {json.dumps(str(graphroot))}\n'
            f'runroot = {json.dumps(str(runroot))}\n\n[storage.options]\nadditionalimagestores = [{stores}]\n\n'
            '[storage.options.overlay]\nskip_mount_home = "true"\n')


class ImageStore:
    """This home's podman image store: one OCI image per image digest."""

    def __init__(self, root: Path) -> None:
        self.root = root  # $IMAGECI_HOME/podman
        self.graphroot = root / "storage"
        self.conf = root / "storage.conf"
        self._lock = threading.Lock()

    def env(self) -> dict[str, str]:
        if not self.conf.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.conf.with_suffix(".tmp")
            tmp.write_text(storage_conf(self.graphroot, self.root / "run"))
            os.replace(tmp, self.conf)
        return {**os.environ, "CONTAINERS_STORAGE_CONF": str(self.conf)}

    def ensure(self, image: ImageHandle, *, lost: bool = False) -> str:
        """The image's tag, copied into the store if it is not there yet. Once there, a mark beside the store
        says so (asking ``podman image exists`` is a podman process: a twentieth of a second of every test);
        ``lost``: a container could not find it (the store emptied, the image removed behind imageci's back),
        so the store is asked again and the image copied again.

        skopeo copies the layout into the store under our own name: ``podman pull oci:PATH`` names the
        image after PATH, which is no valid reference for a home with a dot-directory, capitals or spaces
        (``~/.local/share/imageci``); the layout is named relative to its folder, so that no character of
        the home's path is parsed as part of the reference."""
        tag = f"localhost/imageci/{reference_name(image.name)}:{image.digest[:12]}"
        copied = self.root / "copied" / f"{reference_name(image.name)}@{image.digest}"
        if lost:
            copied.unlink(missing_ok=True)
        elif copied.exists():
            return tag
        with self._lock:
            env = self.env()
            if run_podman([podman_path(), "image", "exists", tag], check=False, env=env).returncode != 0:
                layout = self.root / "oci" / image.digest
                write_layout(layout, image.rootfs_tar, image.digest, tag=image.digest[:12],
                             architecture=image.architecture,
                             config=image.config or image_config(image.name, image.digest))
                run_podman([skopeo_path(), "copy", "-q", f"oci:{layout.name}:{image.digest[:12]}",
                            f"containers-storage:{tag}"], timeout=600, env=env, cwd=layout.parent)
            copied.parent.mkdir(parents=True, exist_ok=True)
            copied.touch()
        return tag


def reference_name(name: str) -> str:
    """``name`` as a path component of an image reference (lowercase alphanumerics joined by one ``.``,
    ``_`` or ``-``): a product name may hold runs of dots a reference may not."""
    component = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return component or "image"


def skopeo_path() -> str:
    found = shutil.which("skopeo")
    if found is None:
        raise HostSetupError(f"skopeo is not installed (podman testbed images are copied with it): {SETUP_HINT}")
    return found
