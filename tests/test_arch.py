"""A version's architecture is recorded with it and used everywhere: testbed
capabilities, which testbeds can run it, the VM it boots in, its OCI config,
DEP-8 ``Architecture:`` filters and quarantine scopes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.checks.dep8 import Dep8Check
from imageci.definitions.dep8 import Dep8Suite, Dep8Test
from imageci.engine.runner import Engine
from imageci.exitcodes import ExitCode
from imageci.formats.oci import write_layout
from imageci.hostarch import host_architecture, runnable_architectures, why_cannot_run
from imageci.store.catalog import NewArtifact
from imageci.store.models import Version
from imageci.testbeds.registry import make_backend
from imageci.testbeds.sandbox import SandboxBackend
from imageci.testbeds.vm.accel import vm_arch
from imageci.testbeds.vm.qemu import QemuBackend
from imageci.verdicts import Verdict

from conftest import Env, FailsFirst, make_env

FOREIGN = "arm64" if host_architecture() != "arm64" else "amd64"
UNRUNNABLE = "ia64"  # a Debian architecture no qemu-user emulates: no host here runs its programs


@pytest.fixture(scope="module")
def foreign_env(image_env: tuple[Env, Version], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """A home of its own, where the example's bytes are registered as another architecture's
    image (only the label matters here)."""
    e, version = image_env
    other = make_env(tmp_path_factory.mktemp("foreign-home"))
    blob = other.store.put_file(e.store.verified_path(version.digest))
    other.catalog.register_version("foreign", blob.digest, [NewArtifact("rootfs", "rootfs.tar", blob.digest,
                                                                        blob.size)],
                                   input_hash=None, definition=None, build_info={}, architecture=FOREIGN)
    other.catalog.register_version("unrunnable", blob.digest, [NewArtifact("rootfs", "rootfs.tar", blob.digest,
                                                                           blob.size)],
                                   input_hash=None, definition=None, build_info={}, architecture=UNRUNNABLE)
    yield other
    other.catalog.close()


@pytest.fixture(scope="module")
def foreign(foreign_env: Env) -> Version:
    return foreign_env.catalog.resolve("foreign")


@pytest.mark.root
def test_the_image_handle_and_capabilities_carry_the_recorded_architecture(foreign_env: Env,
                                                                           foreign: Version) -> None:
    e = foreign_env
    handle = Engine(e.catalog, e.store, {}).image_handle(foreign)
    assert handle.architecture == FOREIGN
    sandbox = SandboxBackend(e.settings.rootfs_cache, e.settings.tmp_dir / "sandboxes")
    assert f"arch:{FOREIGN}" in sandbox.capabilities(handle) and "arch:amd64" not in sandbox.capabilities(handle)
    assert sandbox.why_not(handle) == why_cannot_run(FOREIGN)


@pytest.mark.root
def test_the_oci_config_and_index_name_the_architecture(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    rootfs = e.store.verified_path(version.digest)
    layout = write_layout(tmp_path / "l", rootfs, version.digest, tag="t", architecture="arm64").layout
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["platform"]["architecture"] == "arm64"
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["architecture"] == "arm64"


@pytest.mark.root
def test_a_foreign_vm_boots_under_its_own_qemu_with_tcg(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, _ = image_env
    qemu = QemuBackend(tmp_path, e.settings.rootfs_cache)
    assert qemu.accel(FOREIGN) == "tcg"  # KVM runs only this host's architecture
    spec = vm_arch("arm64")
    assert spec is not None and (spec.binary, spec.machine, spec.console) == ("qemu-system-aarch64", "virt", "ttyAMA0")
    assert vm_arch("amd64").binary == "qemu-system-x86_64"  # type: ignore[union-attr]


@pytest.mark.root
def test_a_host_that_cannot_run_the_image_skips_every_test_with_the_reason(foreign_env: Env) -> None:
    e = foreign_env
    assert why_cannot_run(UNRUNNABLE) is not None
    engine = Engine(e.catalog, e.store, {"sandbox": make_backend("sandbox", e.settings)})
    report = engine.run(e.catalog.resolve("unrunnable"), [FailsFirst(0, "runs-nothing")], ["sandbox"],
                        rerun_all=True)
    assert report.results[0].verdict == Verdict.SKIP
    assert f"cannot run {UNRUNNABLE} programs" in report.results[0].reason
    assert report.exit_code == ExitCode.NO_TESTS


@pytest.mark.root
def test_with_a_qemu_user_handler_the_host_runs_foreign_programs(foreign_env: Env) -> None:
    """scripts/host-setup.sh registers qemu-user's binfmt handlers: arm64 programs run here."""
    assert why_cannot_run(FOREIGN) is None, why_cannot_run(FOREIGN)
    assert FOREIGN in runnable_architectures()


class _Bed:
    """Only capabilities matter to the Architecture: filter."""

    def __init__(self, architecture: str) -> None:
        self.arch = architecture

    def capabilities(self) -> frozenset[str]:
        return frozenset({f"arch:{self.arch}"})


@pytest.mark.parametrize(("field", "on", "skipped"), [
    (("amd64",), "amd64", False), (("amd64",), "arm64", True), (("!arm64",), "arm64", True),
    (("any",), "arm64", False), (("!amd64",), "arm64", False),
])
def test_dep8_architecture_filters_by_the_testbed_s_architecture(field: tuple[str, ...], on: str,
                                                                 skipped: bool) -> None:
    test = Dep8Test("t", None, "true", "", (), (), field, Path("control"), 1)
    reason = Dep8Check(Dep8Suite("src", Path(".")), test)._arch_ok(_Bed(on))  # type: ignore[arg-type]
    assert (reason is not None) == skipped
    if skipped:
        assert on in reason  # type: ignore[operator]
