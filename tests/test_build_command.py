"""The mmdebstrap command a definition turns into (no build runs here)."""

from __future__ import annotations

from pathlib import Path

from imageci.build.inputs import MirrorState
from imageci.build.mmdebstrap import BuildPlan
from imageci.definitions.image import load_definition

from conftest import EXAMPLE


def test_build_command_carries_definition_and_hygiene(tmp_path: Path) -> None:
    d = load_definition(EXAMPLE / "image.yaml").definition
    plan = BuildPlan(d, MirrorState(d.mirror, d.suite, "x", 1752228997), tmp_path)
    argv = plan.command()
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv and "--include=tzdata,ca-certificates" in argv
    assert any("resolv.conf" in a for a in argv)  # host files never ship
    assert argv[-3:] == ["bookworm", str(tmp_path / "rootfs.tar"), "http://deb.debian.org/debian"]
    assert plan.source_date_epoch == 1752228997  # the mirror's Release date pins timestamps
