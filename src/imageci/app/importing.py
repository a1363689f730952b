"""Import an image built elsewhere and publish it to ``testing``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from imageci.app import inventory
from imageci.app.session import Session
from imageci.build.importer import ImportResult, import_image
from imageci.store.models import label


def import_(session: Session, name: str, source: str, *, architecture: str | None = None,
            suite: Path | None = None, tls_verify: bool = True,
            on_step: Callable[[str], None] = lambda _s: None) -> ImportResult:
    """Record the image at ``source`` (a rootfs tarball, ``oci:DIR[:TAG]``, ``oci-archive:FILE[:TAG]``,
    ``docker-archive:FILE``, ``docker://REF``) as a version of ``name`` on ``testing``; ``suite`` is
    the test suite it carries (a run may also name one)."""
    result = import_image(name, source, session.settings, session.catalog, session.store,
                          architecture=architecture, suite=suite, tls_verify=tls_verify, on_step=on_step)
    if not result.identical:
        on_step("reading its packages and files (BOM)")
        inventory.record(session, label(result.version))
    return result
