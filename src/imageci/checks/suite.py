"""A suite's checks: its scripts, the built-ins it asks for, and the tests of the
container-structure-test files and testinfra modules it lists."""

from __future__ import annotations

from typing import TYPE_CHECKING

from imageci.checks.base import Check
from imageci.checks.builtin import GROUPS, builtin_checks
from imageci.checks.script import ScriptCheck

if TYPE_CHECKING:
    from imageci.definitions.suite import Suite
    from imageci.formats.oci import ImageConfig


def suite_checks(suite: Suite, names: list[str] | None = None, config: ImageConfig | None = None) -> list[Check]:
    """The suite's checks (only those named, when ``names``). ``config`` is the image's own
    configuration, for structure tests that read it."""
    members = tuple(n for b in suite.builtins for n in GROUPS.get(b.name, ()))
    listed: list[Check] = []
    if suite.structure:  # (their modules only for a suite that lists such files: a command's start is shorter)
        from imageci.checks.structure import structure_checks
        from imageci.definitions.structure import load_structure
        from imageci.formats.oci import ImageConfig

        listed += [c for path in suite.structure
                   for c in structure_checks(load_structure(path), config or ImageConfig())]
    if suite.testinfra:
        from imageci.checks.testinfra import checks_from_testinfra

        listed += [c for path in suite.testinfra for c in checks_from_testinfra(path)]
    scripts: list[Check] = [ScriptCheck(spec) for spec in
                            suite.select(names, also=members + tuple(c.id for c in listed))]
    chosen = [c for c in listed if not names or c.id in names]
    return scripts + list(builtin_checks(suite, names or None)) + chosen
