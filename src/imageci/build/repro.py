"""Rebuilding a version from what was recorded when it was built: its definition, the mirror and
suite, and its SOURCE_DATE_EPOCH — never from the build cache. The caller compares the bytes."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from imageci.build.bootdisk import plan_disk
from imageci.build.inputs import MirrorState
from imageci.build.mmdebstrap import BuildOutput, BuildPlan, run_mmdebstrap
from imageci.config import Settings
from imageci.definitions.image import parse_definition
from imageci.errors import UsageError
from imageci.owners import process_owner

SNAPSHOT = "http://snapshot.debian.org/archive"


def snapshot_url(mirror_url: str, release_date: str) -> str | None:
    """The snapshot.debian.org URL of ``mirror_url``'s archive as it was at its recorded Release
    ``Date`` (None: not a Debian archive snapshot.debian.org keeps, or no date)."""
    try:
        when = parsedate_to_datetime(release_date).astimezone(UTC)
    except (TypeError, ValueError):
        return None
    archive = mirror_url.rstrip("/").rsplit("/", 1)[-1]
    if archive not in ("debian", "debian-security", "debian-ports") or "://" not in mirror_url:
        return None
    return f"{SNAPSHOT}/{archive}/{when:%Y%m%dT%H%M%SZ}/"


def rebuild(definition_text: str, origin: str, architecture: str, info: dict[str, Any], settings: Settings, *,
            input_hash: str | None = None, mirror_url: str | None = None,
            on_line: Callable[[str], None] | None = None) -> tuple[Path, BuildOutput]:
    """Build the image again into a new work directory (returned; the caller removes it). ``info``
    is the version's build info; ``input_hash`` its recorded one (a disk image's identifiers derive
    from it); ``mirror_url`` replaces the recorded mirror (a snapshot of it)."""
    recorded = info.get("mirror")
    epoch = info.get("source_date_epoch")
    if not isinstance(recorded, dict) or not isinstance(epoch, int):
        raise UsageError(f"{origin}: it was not built by imageci from a definition (no recorded mirror and "
                         "SOURCE_DATE_EPOCH): an imported image cannot be rebuilt here")
    definition = parse_definition(definition_text, origin)
    views = [v for v in definition.per_architecture() if v.architecture == architecture]
    if not views:
        raise UsageError(f"{origin}: its definition does not build {architecture}")
    view = views[0]
    if mirror_url:
        view = view.model_copy(update={"mirror": mirror_url})
    mirror = MirrorState(url=mirror_url or str(recorded.get("url")), suite=str(recorded.get("suite")),
                         date=str(recorded.get("date")), epoch=epoch)
    if view.source_date_epoch is None:
        view = view.model_copy(update={"source_date_epoch": epoch})
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    token = process_owner(settings.tmp_dir).token
    workdir = Path(tempfile.mkdtemp(dir=settings.tmp_dir, prefix=f"build-{token}-repro-"))
    plan = BuildPlan(definition=view, mirror=mirror, workdir=workdir)
    if view.disk_spec is not None:
        if not input_hash:
            raise UsageError(f"{origin}: a disk image without its recorded input hash cannot be rebuilt")
        plan_disk(plan, input_hash)
    return workdir, run_mmdebstrap(plan, on_line=on_line)
