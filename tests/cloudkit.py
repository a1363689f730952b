"""Shared by the cloud disk tests (test_clouddisk: the example as clouds boot it; test_clouddisk_faults:
images that fail and disks that cannot come up): the example, its suite, and one engine run."""

from __future__ import annotations

from pathlib import Path

from imageci.checks.base import Check
from imageci.checks.builtin import builtin_checks
from imageci.checks.script import ScriptCheck
from imageci.definitions.suite import load_suite
from imageci.engine.results import RunReport
from imageci.engine.runner import Engine
from imageci.store.models import Version
from imageci.testbeds.vm.qemu import QemuBackend

from conftest import REPO, Env

CLOUD = REPO / "examples" / "debian-bookworm-cloud"
CLOUD_DEF = CLOUD / "image.yaml"


def log_of(e: Env, r: object) -> bytes:
    digest = r.attempts[-1].log_digest  # type: ignore[attr-defined]
    return e.store.read_bytes(digest) if digest else b""


def run_on(e: Env, backends: dict[str, QemuBackend], version: Version, checks: list[Check]) -> RunReport:
    engine = Engine(e.catalog, e.store, dict(backends), jobs=2)  # two VMs at a time: TCG uses a core each
    return engine.run(version, checks, list(backends), rerun_all=True)


def suite_checks(suite_dir: Path) -> list[Check]:
    suite = load_suite(suite_dir)
    return [*builtin_checks(suite), *(ScriptCheck(s) for s in suite.tests)]
