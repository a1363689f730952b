"""This host's NVIDIA GPUs and whether podman can hand them to a container.

A GPU is detected with ``nvidia-smi -L``; podman passes it with CDI
(``--device nvidia.com/gpu=all``), which needs a CDI specification
(``nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
CDI_DEVICE = "nvidia.com/gpu=all"


def nvidia_gpus() -> list[str]:
    """``nvidia-smi -L``'s lines (``GPU 0: NVIDIA H100 …``); empty without a GPU or its driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")] if out.returncode == 0 else []


def cdi_spec() -> Path | None:
    """A CDI specification naming ``nvidia.com/gpu`` devices, if one is installed."""
    for d in CDI_DIRS:
        for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.json")) if d.is_dir() else []:
            try:
                if "nvidia.com/gpu" in f.read_text(errors="replace"):
                    return f
            except OSError:
                continue
    return None


def why_no_gpu() -> str | None:
    """None when podman can give containers this host's GPUs, else why not."""
    if shutil.which("nvidia-smi") is None:
        return "no NVIDIA driver here (nvidia-smi not found)"
    if not nvidia_gpus():
        return "nvidia-smi -L lists no GPU"
    if cdi_spec() is None:
        return ("no CDI specification for nvidia.com/gpu (run: nvidia-ctk cdi generate "
                "--output=/etc/cdi/nvidia.yaml)")
    return None
