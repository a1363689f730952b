"""Why two builds of one image differ: diffoscope's text report on the two root file system
tarballs (Debian's diffoscope-minimal is enough for tar archives and text)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from imageci.errors import ImageciError

MAX_REPORT = 4 << 20  # bytes of report kept (diffoscope cuts its own output there)
TIMEOUT = 1800


class DiffoscopeError(ImageciError):
    """diffoscope is missing or failed (the report could not be made)."""


def diffoscope_report(before: Path, after: Path) -> str:
    """The text report of what differs between two files (empty when they are identical)."""
    if shutil.which("diffoscope") is None:
        raise DiffoscopeError("diffoscope is not installed (apt-get install diffoscope-minimal)")
    try:
        done = subprocess.run(["diffoscope", "--no-progress", "--text", "-", "--max-report-size", str(MAX_REPORT),
                               "--exclude-directory-metadata", "no", str(before), str(after)],
                              capture_output=True, text=True, errors="replace", timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DiffoscopeError(f"diffoscope did not finish in {TIMEOUT} s") from None
    if done.returncode not in (0, 1):  # 1: they differ
        raise DiffoscopeError(f"diffoscope failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout
