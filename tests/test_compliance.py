"""Compliance (issue 14, part 3): imageci's own XCCDF 1.2 + OVAL content for Debian 12, evaluated
offline by the real OpenSCAP (oscap-chroot) against a version's root file system. The example
image passes every rule; a deliberately weakened variant scores lower and the failing rules are
named; the gate's minimum score decides promotion; Debian's ssg-debian content, written for
Debian 10/11, applies to nothing on bookworm."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLE, Env, require_tool

pytestmark = pytest.mark.root  # builds with mmdebstrap

WEAKEN = """\
  - run: |
      passwd -d root
      chmod 0644 /etc/shadow
      chmod o+w /etc/issue
      sed -i 's/^deb /deb [trusted=yes] /' /etc/apt/sources.list
      sed -i 's/^UMASK.*/UMASK 000/' /etc/login.defs
      mkdir -p /etc/sudoers.d
      echo 'ALL ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/open
"""
WEAKENED_RULES = {"no_empty_passwords", "root_password_locked", "shadow_permissions", "apt_verifies_signatures",
                  "umask_restrictive", "no_world_writable_etc", "sudo_needs_password"}
SSG = Path("/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml")


def _build(env: Env, directory: Path, text: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE / "suite", directory / "suite", dirs_exist_ok=True)
    (directory / "image.yaml").write_text(text)
    done = env.cli("build", str(directory / "image.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
    name = text.split("name: ", 1)[1].split("\n", 1)[0]
    return f"{name}@{env.catalog.versions(name)[-1].serial}"


def test_a_weakened_image_scores_lower_with_its_failing_rules_named_and_the_gate_decides(
        env: Env, tmp_path: Path) -> None:
    require_tool(shutil.which("oscap-chroot") is not None, "openscap-utils (oscap-chroot)")
    gate = "    testbeds: [sandbox]\n    compliance:\n      min_score: 90\n"
    base = (EXAMPLE / "image.yaml").read_text().replace("    testbeds: [sandbox]\n", gate)
    assert "min_score" in base
    good = _build(env, tmp_path / "good", base)
    weak_text = base.replace("name: debian-bookworm-minimal", "name: weakened-minimal").replace(
        "  - run: apt-get clean", WEAKEN + "  - run: apt-get clean")
    assert "passwd -d root" in weak_text
    weak = _build(env, tmp_path / "weak", weak_text)

    first = json.loads(env.cli("compliance", good, "--json").stdout)
    assert first["score"] == 100.0 and first["content"] == "built-in"
    results = {r["id"].removeprefix("xccdf_dev.imageci_rule_"): r["result"] for r in first["rules"]}
    assert len(results) == 10 and set(results.values()) == {"pass"}  # every rule applies to bookworm
    [v] = env.catalog.versions("debian-bookworm-minimal")
    assert "compliance" in {a.kind for a in v.artifacts}  # stored with the version

    worse = json.loads(env.cli("compliance", weak, "--json").stdout)
    failed = {r["id"].removeprefix("xccdf_dev.imageci_rule_") for r in worse["rules"] if r["result"] == "fail"}
    assert failed == WEAKENED_RULES and worse["score"] < first["score"]
    table = env.cli("compliance", weak)
    assert "fail" in table.stdout and "No account has an empty password" in table.stdout

    assert env.cli("test", good).returncode == 0
    env.cli("test", weak)  # its suite's no-world-writable check fails too: the gate names both
    held = env.cli("gate", good)
    assert held.returncode == 0 and "compliance: score 100.0 ≥ 90" in held.stdout, held.stdout
    refused = env.cli("gate", weak)
    assert refused.returncode == 5 and "compliance: score" in refused.stdout, refused.stdout
    assert "fails: No account has an empty password (high" in refused.stdout
    status = json.loads(env.cli("gate", weak, "--json").stdout)
    assert [s["name"] for s in status["sections"] if not s["holds"]] == ["compliance"]
    assert env.cli("promote", weak).returncode == 5
    assert env.cli("promote", good).returncode == 0

    # Debian's own content is for Debian 10/11: on bookworm every rule is notapplicable
    require_tool(SSG.is_file(), "ssg-debian")
    ssg = json.loads(env.cli("compliance", good, "--content", str(SSG), "--profile",
                             "xccdf_org.ssgproject.content_profile_anssi_np_nt28_minimal", "--json").stdout)
    assert ssg["rules"] and {r["result"] for r in ssg["rules"]} == {"notapplicable"}
    bad = env.cli("compliance", good, "--content", str(tmp_path / "nope.xml"))
    assert bad.returncode == 2 and "no such content file" in bad.stderr
