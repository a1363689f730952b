"""One definition, two architectures, on this x86_64 host: amd64 built natively and arm64
through qemu-user + binfmt_misc; arm64's sandbox tests run emulated, and it boots in
qemu-system-aarch64 (TCG, direct kernel boot, the same snapshot restore as x86_64). Each
architecture is its own product (NAME-ARCH) with its own results and gate; the build is
promotable only when every architecture passed, and its architectures move to stable together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from imageci.checks.base import Check
from imageci.checks.builtin import BuiltinCheck
from imageci.checks.script import ScriptCheck
from imageci.definitions.suite import load_suite
from imageci.engine.runner import Engine
from imageci.hostarch import why_cannot_run
from imageci.testbeds.vm.accel import qemu_binary
from imageci.testbeds.vm.qemu import QemuBackend
from imageci.verdicts import Verdict

from conftest import REPO, Env, make_env, require_tool, write_suite

VM_DEF = REPO / "examples" / "debian-bookworm-vm" / "image.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.root]

# The architecture a program runs as, whatever the host: dpkg's name and the kernel's must agree.
ARCH_CHECK = """#!/bin/sh
# imageci-description: the image's programs run as its own architecture
set -eu
echo "$(dpkg --print-architecture) $(uname -m)"
case "$(dpkg --print-architecture)/$(uname -m)" in amd64/x86_64|arm64/aarch64) ;; *) exit 1 ;; esac
"""
NOT_ON_ARM64 = "#!/bin/sh\ntest \"$(dpkg --print-architecture)\" != arm64\n"


def _definition(directory: Path) -> Path:
    """The VM example, for amd64 and arm64. Its kernel comes in a customize step, after an
    initramfs configuration with the modules a virtio guest needs: `MODULES=most` would run
    modinfo on every module under emulation (minutes on arm64)."""
    doc = yaml.safe_load(VM_DEF.read_text())
    doc["name"] = "multi"
    del doc["architecture"]
    doc["architectures"] = ["amd64", "arm64"]
    doc["packages"] = [p for p in doc["packages"] if not p.startswith("linux-image")]
    doc["customize"] = [
        {"write": "/etc/initramfs-tools/conf.d/imageci.conf", "content": "MODULES=list\n"},
        {"write": "/etc/initramfs-tools/modules", "content": "virtio_pci\nvirtio_blk\nvirtio_net\next4\n"},
        {"run": "apt-get install -y --no-install-recommends linux-image-$(dpkg --print-architecture)"},
        *doc["customize"],
    ]
    doc["tests"] = {"suite": "suite", "gate": {"tests": "all", "testbeds": ["sandbox"]}}
    write_suite(directory / "suite", {"arch.sh": ARCH_CHECK, "not-on-arm64.sh": NOT_ON_ARM64})
    path = directory / "image.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Path, str]]:
    assert why_cannot_run("arm64") is None, why_cannot_run("arm64")  # host-setup registers qemu-user
    e = make_env(tmp_path_factory.mktemp("multiarch-home"))
    definition = _definition(tmp_path_factory.mktemp("multiarch-def"))
    res = e.cli("build", str(definition), timeout=1800)
    assert res.returncode == 0, res.stderr
    yield e, definition, res.stdout
    e.catalog.close()


def test_one_product_per_architecture(built: tuple[Env, Path, str]) -> None:
    e, definition, out = built
    assert "built multi-amd64@" in out and "built multi-arm64@" in out, out
    amd64, arm64 = e.catalog.resolve("multi-amd64:testing"), e.catalog.resolve("multi-arm64:testing")
    assert (amd64.architecture, arm64.architecture) == ("amd64", "arm64")
    assert amd64.digest != arm64.digest and amd64.serial == arm64.serial
    manifest = e.store.read_bytes(next(a.digest for a in arm64.artifacts if a.kind == "manifest")).decode()
    kernels = [line.split("\t") for line in manifest.splitlines() if line.startswith("linux-image-")]
    assert kernels and all(k[2] == "arm64" for k in kernels), kernels
    again = e.cli("build", str(definition), "--arch", "arm64")
    assert again.returncode == 0 and "unchanged inputs" in again.stdout and "multi-amd64" not in again.stdout
    wrong = e.cli("build", str(definition), "--arch", "riscv64")
    assert wrong.returncode == 2 and "multi is not built for riscv64 (it lists: amd64, arm64)" in wrong.stderr


def test_results_and_gates_per_architecture_promote_together(built: tuple[Env, Path, str]) -> None:
    e, definition, _ = built
    assert e.cli("test", "multi-amd64:testing", "--testbed", "sandbox").returncode == 0
    arm = e.cli("test", "multi-arm64:testing", "--testbed", "sandbox")
    assert arm.returncode == 1, arm.stdout + arm.stderr  # emulated, and one test fails there
    results = json.loads(e.cli("results", "multi-arm64:testing", "--json", check=True).stdout)
    assert results["architecture"] == "arm64"
    assert {a["test"]: a["verdict"] for a in results["attempts"]} == {"arch": "pass", "not-on-arm64": "fail"}
    log = Path(next(a["log"] for a in results["attempts"] if a["test"] == "arch")).read_text()
    assert "arm64 aarch64" in log
    mine = json.loads(e.cli("results", "multi-amd64:testing", "--json", check=True).stdout)
    assert {a["test"]: a["verdict"] for a in mine["attempts"]} == {"arch": "pass", "not-on-arm64": "pass"}

    # amd64's own requirements are met, but arm64's are not: the build is not promotable.
    gate = e.cli("gate", "multi-amd64:testing", "--json")
    assert gate.returncode == 5
    status = json.loads(gate.stdout)
    assert status["unmet"] == [] and not status["holds"]
    [other] = status["architectures"]
    assert other["architecture"] == "arm64" and other["image"].startswith("multi-arm64@") and not other["holds"]
    assert "not-on-arm64 on sandbox: latest attempt: fail" in other["why"]
    refused = e.cli("promote", "multi-amd64:testing")
    assert refused.returncode == 5 and "arch arm64 (multi-arm64@" in refused.stderr, refused.stderr

    # The test is dropped from the suite: the next build changes only the test configuration.
    (definition.parent / "suite" / "not-on-arm64.sh").unlink()
    rebuilt = e.cli("build", str(definition))
    assert rebuilt.returncode == 0 and rebuilt.stdout.count("unchanged inputs") == 2, rebuilt.stdout
    assert e.cli("gate", "multi-arm64:testing").returncode == 0
    promoted = e.cli("promote", "multi-arm64:testing")
    assert promoted.returncode == 0, promoted.stderr
    assert "promoted multi-amd64@" in promoted.stdout and "with it" in promoted.stdout
    for name in ("multi-amd64", "multi-arm64"):
        assert e.catalog.resolve(f"{name}:stable").state == "stable"
    events = e.cli("events", "multi-amd64:stable", check=True).stdout
    moved = [line for line in events.splitlines() if "testing → stable" in line]
    assert len(moved) == 1 and "with multi-arm64@" in moved[0], events


def test_arm64_boots_in_qemu_system_aarch64_with_snapshot_restore(built: tuple[Env, Path, str],
                                                                   tmp_path: Path) -> None:
    require_tool(qemu_binary("arm64") is not None, "qemu-system-aarch64")
    e, _, _ = built
    version = e.catalog.resolve("multi-arm64:testing")
    fresh = "#!/bin/sh\nset -eu\nls /root/mark-* 2>/dev/null && { echo 'saw another test' >&2; exit 1; }\n" \
            "touch /root/mark-$$\n"
    # pointer authentication is still there under TCG (qemu's fast algorithm, not none): the guest's CPU has it
    pauth = "#!/bin/sh\nset -eu\ngrep -m1 '^Features' /proc/cpuinfo | grep -w paca | grep -qw pacg\n"
    suite = write_suite(tmp_path / "suite", {"arch.sh": ARCH_CHECK, "fresh-a.sh": fresh, "fresh-b.sh": fresh,
                                             "pauth.sh": pauth})
    backend = QemuBackend(e.home, e.settings.rootfs_cache, keep_warm=True)
    assert backend.accel("arm64") == "tcg"  # an arm64 guest on an x86_64 host
    try:
        checks: list[Check] = [*(ScriptCheck(s) for s in load_suite(suite).tests), BuiltinCheck("boot-multi-user"),
                               BuiltinCheck("login-works")]
        report = Engine(e.catalog, e.store, {"qemu": backend}, jobs=1).run(version, checks, ["qemu"],
                                                                           rerun_all=True)
    finally:
        backend.shutdown()
    got = {r.test_id: (r.verdict, r.reason) for r in report.results}
    assert got == {"arch": (Verdict.PASS, ""), "fresh-a": (Verdict.PASS, ""), "fresh-b": (Verdict.PASS, ""),
                   "pauth": (Verdict.PASS, ""), "boot-multi-user": (Verdict.PASS, ""),
                   "login-works": (Verdict.PASS, "")}, got
    assert backend.cold_boots == 1  # one boot; every other fresh VM was a snapshot restore
    arch = next(r for r in report.results if r.test_id == "arch")
    assert arch.attempts[-1].log_digest is not None
    log = e.store.path(arch.attempts[-1].log_digest).read_text()
    assert "arm64 aarch64" in log
