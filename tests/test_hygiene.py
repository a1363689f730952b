"""Image hygiene built-ins on real images: the example image is clean; a copy
with the usual mistakes planted in it fails each check with the path."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.checks.builtin import BUILTINS, BuiltinCheck
from imageci.checks.hygiene import HYGIENE
from imageci.engine.runner import Engine
from imageci.store.models import Version
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.sandbox import SandboxBackend, SandboxTestbed
from imageci.verdicts import Verdict

from conftest import Env, write_suite

pytestmark = pytest.mark.root

PLANTED: dict[str, tuple[str, int, bytes]] = {  # path: (kind, mode, content)
    "etc/ssh/ssh_host_ed25519_key": ("f", 0o600, b"-----BEGIN OPENSSH PRIVATE KEY-----\n"),
    "etc/machine-id": ("f", 0o444, b"0123456789abcdef0123456789abcdef\n"),
    "var/lib/cloud/instances/i-0abc": ("d", 0o755, b""),
    "root/core.4242": ("f", 0o600, b"\x7fELF core"),
    "var/log/huge.log": ("f", 0o640, b"x" * (2 << 20)),
    "etc/imageci-shared.conf": ("f", 0o666, b"anyone=writes\n"),
    "usr/local/bin/helper": ("f", 0o4755, b"#!/bin/sh\n"),
    "etc/imageci-release": ("f", 0o644, b"IMAGE_ID=example\nBUILD_ID=\n"),
}


@pytest.fixture(scope="module")
def clean(image_env: tuple[Env, Version]) -> ImageHandle:
    e, version = image_env
    return Engine(e.catalog, e.store, {}).image_handle(version)


@pytest.fixture(scope="module")
def dirty(clean: ImageHandle, tmp_path_factory: pytest.TempPathFactory) -> ImageHandle:
    out = tmp_path_factory.mktemp("dirty") / "rootfs.tar"
    with tarfile.open(clean.rootfs_tar) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if member.name.lstrip("./") in PLANTED:
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        for path, (kind, mode, data) in PLANTED.items():
            info = tarfile.TarInfo(f"./{path}")
            info.mode = mode
            if kind == "d":
                info.type = tarfile.DIRTYPE
                dst.addfile(info)
            else:
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return ImageHandle(digest, "dirty", out, clean.architecture)


@pytest.fixture
def backend(image_env: tuple[Env, Version], tmp_path: Path) -> SandboxBackend:
    e, _ = image_env
    return SandboxBackend(e.settings.rootfs_cache, tmp_path / "sandboxes")


def _bed(backend: SandboxBackend, handle: ImageHandle) -> Iterator[SandboxTestbed]:
    tb = backend.create(handle)
    tb.open()
    yield tb
    tb.close()


@pytest.fixture
def clean_bed(backend: SandboxBackend, clean: ImageHandle) -> Iterator[SandboxTestbed]:
    yield from _bed(backend, clean)


@pytest.fixture
def dirty_bed(backend: SandboxBackend, dirty: ImageHandle) -> Iterator[SandboxTestbed]:
    yield from _bed(backend, dirty)


def test_the_example_image_is_clean(clean_bed: SandboxTestbed) -> None:
    for name in HYGIENE:
        out = BuiltinCheck(name).run(clean_bed)
        assert out.verdict == Verdict.PASS, (name, out.reason, out.log.decode(errors="replace"))
    stamp = BuiltinCheck("release-stamp", {"keys": "IMAGE_NAME,IMAGE_FAMILY"}).run(clean_bed)
    assert stamp.verdict == Verdict.PASS, stamp.reason  # written by the definition
    stamp = BuiltinCheck("release-stamp", {"path": "/etc/image-release"}).run(clean_bed)
    assert stamp.verdict == Verdict.FAIL and "no release stamp at /etc/image-release" in stamp.reason


def test_each_planted_mistake_fails_its_check_with_the_path(dirty_bed: SandboxTestbed) -> None:
    want = {
        "no-ssh-host-keys": "/etc/ssh/ssh_host_ed25519_key",
        "machine-id-uninitialized": "/etc/machine-id: 0123456789abcdef",
        "no-cloud-init-instance": "/var/lib/cloud/instances/i-0abc",
        "no-core-files": "/root/core.4242",
        "var-log-bounded": "more than 1024 KiB",
        "no-world-writable": "/etc/imageci-shared.conf",
        "setuid-allowlist": "/usr/local/bin/helper",
    }
    opts = {"var-log-bounded": {"max-mb": "1"}}
    for name, needle in want.items():
        out = BuiltinCheck(name, opts.get(name, {})).run(dirty_bed)
        assert out.verdict == Verdict.FAIL and needle in out.reason, (name, out.reason)
    # the options are what make them pass again
    assert BuiltinCheck("var-log-bounded", {"max-mb": "64"}).run(dirty_bed).verdict == Verdict.PASS
    allowed = BuiltinCheck("setuid-allowlist", {"allow": "/usr/local/bin/helper"}).run(dirty_bed)
    assert allowed.verdict == Verdict.PASS, allowed.reason
    stamp = BuiltinCheck("release-stamp", {"keys": "IMAGE_ID"}).run(dirty_bed)
    assert stamp.verdict == Verdict.PASS, stamp.reason
    stamp = BuiltinCheck("release-stamp", {"keys": "IMAGE_ID,BUILD_ID"}).run(dirty_bed)
    assert stamp.verdict == Verdict.FAIL and stamp.reason.endswith("lacks BUILD_ID")


def test_hygiene_group_gives_one_result_per_check_and_skips_booted_testbeds(image_env: tuple[Env, Version],
                                                                             tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "s", {}, "builtins:\n  - hygiene\n  - name: var-log-bounded\n    max-mb: 0.001\n")
    res = e.cli("test", f"{version.product.name}@{version.serial}", "--suite", str(d), "--testbed", "sandbox",
                "--rerun-all", "--tap", str(tmp_path / "r.tap"))
    tap = (tmp_path / "r.tap").read_text()
    assert res.returncode == 1, res.stdout + res.stderr  # the 1 KiB bound on /var/log fails
    for name in HYGIENE:
        assert f" - {name}" in tap
    assert tap.count("not ok") == 1 and "var-log-bounded" in tap.split("not ok")[1].splitlines()[0]
    only = e.cli("run", f"{version.product.name}@{version.serial}", "no-core-files", "--suite", str(d),
                 "--testbed", "sandbox")
    assert only.returncode == 0, only.stdout + only.stderr
    assert "pristine" in BUILTINS["no-core-files"].needs
