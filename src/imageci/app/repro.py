"""Reproducibility: ``imageci repro REF`` builds the version again from its recorded inputs and
compares the bytes; on a difference, diffoscope's report is stored with the version. The newest
result is kept (``repro.json``) and the gate's ``reproducible`` part reads it."""

from __future__ import annotations

import json
from collections.abc import Callable

from pydantic import BaseModel

from imageci.app import access, inventory
from imageci.app.access import LOCAL, Principal, Scope
from imageci.app.session import Session
from imageci.build.repro import rebuild, snapshot_url
from imageci.errors import UsageError
from imageci.fs import safe_rmtree
from imageci.policy.sections import GateSection
from imageci.store.blobs import hash_file
from imageci.store.catalog import NewArtifact
from imageci.store.lookups import VersionInfo
from imageci.store.states import REPRO, REPRO_REPORT, ROOTFS, utcnow
from imageci.supply.diff import package_changes
from imageci.supply.extract import extract_bom
from imageci.supply.reprocheck import diffoscope_report

FILENAMES = {REPRO: "repro.json", REPRO_REPORT: "repro-report.txt"}


class ReproResult(BaseModel):
    image: str  # NAME@SERIAL
    digest: str  # sha256:… of the version
    rebuilt: str  # sha256:… of the rebuild
    reproduced: bool
    mirror: str
    source_date_epoch: int
    at: str  # ISO 8601
    seconds: float
    packages_differ: list[str] = []  # NAME: VERSION → VERSION, when the mirror no longer serves the same
    snapshot: str = ""  # where the archive of the build's date is (a --mirror to rebuild from)
    report: str = ""  # the stored diffoscope report's file name (empty: reproduced)
    report_excerpt: str = ""  # its first lines


def repro(session: Session, ref: str, *, mirror: str | None = None, snapshot: bool = False, by: Principal = LOCAL,
          on_line: Callable[[str], None] | None = None) -> ReproResult:
    """Rebuild the version ``ref`` names and compare; the result (and diffoscope's report on a
    difference) is stored with it. ``snapshot``: from snapshot.debian.org's copy of the recorded
    mirror at its recorded date (the package versions of then). Needs scope ``test`` on a server."""
    version = access.resolve(session.reader, by, ref)
    if by != LOCAL:
        by.require(Scope.TEST, version.namespace, f"rebuild {version.label}")
    v = session.catalog.resolve(version.label)
    info = json.loads(v.build_info or "{}")
    if snapshot and mirror:
        raise UsageError("--snapshot and --mirror name two different mirrors: give one")
    if snapshot:
        recorded = info.get("mirror") if isinstance(info.get("mirror"), dict) else {}
        mirror = snapshot_url(str(recorded.get("url", "")), str(recorded.get("date", "")))
        if mirror is None:
            raise UsageError(f"{version.label}: its recorded mirror {recorded.get('url')!r} is not an archive "
                             "snapshot.debian.org keeps (give --mirror URL)")
    if not v.definition:
        raise UsageError(f"{version.label} has no recorded definition (it was imported?): it cannot be rebuilt here")
    workdir, out = rebuild(v.definition, f"{version.label}:image.yaml", v.architecture, info, session.settings,
                           input_hash=v.input_hash, mirror_url=mirror, on_line=on_line)
    try:
        rebuilt = hash_file(out.rootfs)
        # the root filesystem is compared (a disk image's too: its disk is made from that tree)
        rootfs = next((a.digest for a in v.artifacts if a.kind == ROOTFS), version.digest)
        same = rebuilt.digest == rootfs
        differ: list[str] = []
        report_name, excerpt, made, hint = "", "", [], None
        if not same:
            mine = inventory.bom(session, version.label)[1]
            tree = workdir / "tree"
            tree.mkdir()
            from imageci.formats.rootfs import safe_extract

            safe_extract(out.rootfs, tree)
            again = extract_bom(tree)
            differ = [f"{c.name}: {c.before or '–'} → {c.after or '–'}" for c in package_changes(mine, again)]
            recorded = info.get("mirror") if isinstance(info.get("mirror"), dict) else {}
            hint = snapshot_url(str(recorded.get("url", "")), str(recorded.get("date", "")))
            text = diffoscope_report(session.store.verified_path(rootfs), out.rootfs)
            blob = session.store.put_bytes(text.encode())
            made.append(NewArtifact(REPRO_REPORT, FILENAMES[REPRO_REPORT], blob.digest, blob.size))
            report_name, excerpt = FILENAMES[REPRO_REPORT], "\n".join(text.splitlines()[:40])
        result = ReproResult(image=version.label, digest=f"sha256:{version.digest}", rebuilt=f"sha256:{rebuilt.digest}",
                             reproduced=same, mirror=mirror or str(info.get("mirror", {}).get("url", "")),
                             source_date_epoch=out.source_date_epoch, at=utcnow().isoformat(timespec="seconds"),
                             seconds=round(out.seconds, 1), packages_differ=differ, snapshot=hint or "",
                             report=report_name,
                             report_excerpt=excerpt)
        blob = session.store.put_bytes(result.model_dump_json().encode())
        made.append(NewArtifact(REPRO, FILENAMES[REPRO], blob.digest, blob.size))
        session.catalog.attach(version.id, made)
        return result
    finally:
        safe_rmtree(workdir)


def last(session: Session, version: VersionInfo) -> ReproResult | None:
    stored = inventory.digests(session, version).get(REPRO)
    if stored is None:
        return None
    return ReproResult.model_validate(json.loads(session.store.read_bytes(stored)))


def gate_section(session: Session, version: VersionInfo) -> GateSection:
    found = last(session, version)
    if found is None:
        return GateSection("reproducibility", False, f"never rebuilt: run imageci repro {version.label}")
    if found.reproduced:
        return GateSection("reproducibility", True, f"rebuilt bit for bit on {found.at}")
    lines = [f"package: {d}" for d in found.packages_differ[:20]] + found.report_excerpt.splitlines()[:15]
    return GateSection("reproducibility", False, f"the rebuild of {found.at} differs ({found.rebuilt[:19]}…; "
                                                 f"report: {found.report})", lines)
