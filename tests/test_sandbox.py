"""The sandbox testbed against the real example image: bwrap + overlayfs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.engine.runner import Engine
from imageci.fs import mounts_below
from imageci.store.models import Version
from imageci.testbeds import base
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.limits import cgroup_mode
from imageci.testbeds.sandbox import SandboxBackend, SandboxTestbed

from conftest import Env

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox testbed needs root")


@pytest.fixture(scope="module")
def handle(image_env: tuple[Env, Version]) -> ImageHandle:
    e, version = image_env
    return Engine(e.catalog, e.store, {}).image_handle(version)


@pytest.fixture
def backend(image_env: tuple[Env, Version], tmp_path: Path) -> SandboxBackend:
    e, _ = image_env
    return SandboxBackend(e.settings.rootfs_cache, tmp_path / "sandboxes")


@pytest.fixture
def bed(backend: SandboxBackend, handle: ImageHandle) -> Iterator[SandboxTestbed]:
    tb = backend.create(handle)
    tb.open()
    yield tb
    tb.close()


def test_implements_the_protocol(bed: SandboxTestbed) -> None:
    assert isinstance(bed, base.Testbed)
    assert {"root", "revert", "arch:amd64"} <= bed.capabilities()


def test_exec_reports_exit_code_and_streams(bed: SandboxTestbed) -> None:
    r = bed.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_code, r.stdout, r.stderr, r.timed_out) == (3, b"out\n", b"err\n", False)
    r = bed.exec(["cat"], stdin=b"fed in")
    assert r.stdout == b"fed in"
    r = bed.exec(["sh", "-c", 'echo "$FOO $HOME $(id -u) $(hostname)"'], env={"FOO": "bar"})
    assert r.stdout == b"bar /root 0 imageci-sandbox\n"
    assert bed.exec(["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"]).stdout == b"bookworm\n"


def test_each_testbed_is_fresh_and_revert_discards_changes(backend: SandboxBackend, handle: ImageHandle) -> None:
    with backend.create(handle) as a:
        assert a.exec(["sh", "-c", "echo dirty > /etc/dirty && rm /etc/os-release"]).exit_code == 0
        assert a.exec(["test", "-e", "/etc/dirty"]).exit_code == 0
        a.revert()
        assert a.exec(["test", "-e", "/etc/dirty"]).exit_code == 1
        assert a.exec(["test", "-e", "/etc/os-release"]).exit_code == 0
        a.exec(["touch", "/etc/dirty"])
    with backend.create(handle) as b:
        assert b.exec(["test", "-e", "/etc/dirty"]).exit_code == 1
    # the shared lower layer never changed
    assert not (backend.rootfs_cache / handle.digest / "etc" / "dirty").exists()
    assert (backend.rootfs_cache / handle.digest / "etc" / "os-release").exists()


def _alive(marker: str) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker in (p / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(p.name))
            except OSError:
                pass
    return found


def test_timeout_kills_the_whole_process_tree(bed: SandboxTestbed) -> None:
    marker = f"mark{uuid.uuid4().hex[:8]}"
    script = f"cp /bin/sleep /tmp/{marker}; /tmp/{marker} 300 & /tmp/{marker} 301 & wait"
    r = bed.exec(["sh", "-c", script], timeout=1.5)
    assert r.timed_out and r.exit_code is None
    assert _alive(marker) == []


def test_network_is_loopback_only_unless_asked(bed: SandboxTestbed) -> None:
    def ifaces(network: bool) -> set[str]:
        out = bed.exec(["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1"], network=network).stdout
        return {x.strip() for x in out.decode().split()}

    assert ifaces(False) == {"lo"}
    host = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    assert ifaces(True) == host


def test_copy_in_and_out_never_follow_image_symlinks_to_the_host(bed: SandboxTestbed, tmp_path: Path) -> None:
    src = tmp_path / "payload"
    src.write_text("inside")
    bed.exec(["ln", "-s", "/", "/tmp/hostroot"])
    name = f"imageci-escape-{uuid.uuid4().hex[:8]}"
    bed.copy_in(src, f"/tmp/hostroot/{name}")
    assert not Path("/", name).exists()  # not on the host
    assert bed.exec(["cat", f"/{name}"]).stdout == b"inside"
    bed.exec(["sh", "-c", "echo result > /tmp/out.txt; ln -s /etc/shadow /tmp/shadow-link"])
    bed.copy_out("/tmp/out.txt", tmp_path / "out.txt")
    assert (tmp_path / "out.txt").read_text() == "result\n"
    bed.copy_out("/tmp/shadow-link", tmp_path / "shadow")
    # the link resolved inside the image, to the image's own /etc/shadow
    assert (tmp_path / "shadow").read_text().startswith("root:")
    assert (tmp_path / "shadow").read_text() == (bed.merged / "etc" / "shadow").read_text()  # type: ignore[operator]


def test_close_unmounts_and_removes_everything(backend: SandboxBackend, handle: ImageHandle) -> None:
    tb = backend.create(handle)
    tb.open()
    d = tb.dir
    assert d is not None and mounts_below(d)
    tb.close()
    assert not d.exists() and mounts_below(d) == []
    tb.close()  # idempotent


@pytest.mark.skipif(cgroup_mode() is None, reason="cgroups not writable here")
def test_memory_and_pids_limits(image_env: tuple[Env, Version], handle: ImageHandle, tmp_path: Path) -> None:
    e, _ = image_env
    tight = SandboxBackend(e.settings.rootfs_cache, tmp_path / "sb", memory_bytes=64 << 20, pids=32)
    loose = SandboxBackend(e.settings.rootfs_cache, tmp_path / "sb2")
    hog = ["sh", "-c", "head -c 200000000 /dev/zero | tail -n 1 | wc -c"]
    with loose.create(handle) as tb:
        assert tb.exec(hog, timeout=60).stdout == b"200000000\n"
    with tight.create(handle) as tb:
        assert tb.exec(hog, timeout=60).stdout != b"200000000\n"  # tail OOM-killed at 64 MiB
        r = tb.exec(["sh", "-c", "for i in $(seq 100); do sleep 2 & done; wait"], timeout=60)
        assert b"fork" in r.stderr.lower()


def test_broken_lower_layer_is_a_testbed_error(handle: ImageHandle, tmp_path: Path) -> None:
    from imageci.errors import TestbedError

    tb = SandboxTestbed(handle, tmp_path / "missing-rootfs", tmp_path / "wr")
    with pytest.raises(TestbedError, match="overlayfs mount failed"):
        tb.open()
    assert list((tmp_path / "wr").iterdir()) == []
