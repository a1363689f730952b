"""Build an image from its definition and publish it to ``testing``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imageci.app import inventory
from imageci.app.session import Session
from imageci.build.service import BuildResult, build_images
from imageci.definitions.image import load_definition
from imageci.errors import UsageError
from imageci.store.models import label


def build(session: Session, definition: Path, *, force: bool = False,
          on_line: Callable[[str], None] | None = None, suite: Path | None = None,
          only: set[str] | None = None) -> list[BuildResult]:
    """Build (or skip, when the inputs did not change) and record a version of each product the
    definition makes (one; or one per architecture it lists, ``only`` some of them), with its
    definition, suite snapshot (``suite``, else the definition's) and image configuration;
    ``on_line`` sees the builder's output."""
    if suite is not None and not suite.is_dir():
        raise UsageError(f"--suite {suite}: no such directory")
    loaded = load_definition(definition)
    results = build_images(loaded, session.settings, session.catalog, session.store, force=force, on_line=on_line,
                           suite=suite, only=only)
    for result in results:
        if not result.skipped and not result.identical:
            inventory.record(session, label(result.version))
    return results
