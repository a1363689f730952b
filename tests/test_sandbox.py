"""The sandbox testbed against the real example image: bwrap + overlayfs."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.definitions.limits import Limits
from imageci.engine.runner import Engine
from imageci.fs import mounts_below
from imageci.store.models import Version
from imageci.testbeds import base
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.limits import cgroup_mode
from imageci.testbeds.sandbox import SandboxBackend, SandboxTestbed

from conftest import Env

pytestmark = pytest.mark.root


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


LOCALHOST_SERVICE = r"""
perl -MIO::Socket::INET -e '
  my $l = IO::Socket::INET->new(LocalAddr => "localhost", LocalPort => 8123, Listen => 1, ReuseAddr => 1)
    or die "listen: $@";
  if (fork() == 0) { my $c = $l->accept; print $c "hello from localhost\n"; exit 0 }
  my $s = IO::Socket::INET->new(PeerAddr => "localhost:8123") or die "connect: $@"; print scalar <$s>; wait'
"""


def test_localhost_and_the_hostname_resolve_without_changing_the_image(bed: SandboxTestbed,
                                                                        handle: ImageHandle) -> None:
    """A minbase image ships no /etc/hosts: the testbed gets its own, as podman gives one, so a service on
    ``localhost`` is reached by that name; the image's tree has no such file afterwards."""
    lower = bed.lower
    assert not (lower / "etc" / "hosts").exists() and not (lower / "etc" / "hostname").exists()
    r = bed.exec(["sh", "-c", "getent ahosts localhost | cut -d' ' -f1 | sort -u; getent hosts imageci-sandbox; "
                              "cat /etc/hostname; hostname"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.decode().split("\n")[:4] == ["127.0.0.1", "::1", "127.0.1.1       imageci-sandbox",
                                                   "imageci-sandbox"]
    served = bed.exec(["sh", "-c", LOCALHOST_SERVICE], timeout=60)
    assert (served.exit_code, served.stdout) == (0, b"hello from localhost\n"), served.stderr
    assert bed.exec(["sh", "-c", "echo 10.9.9.9 extra >> /etc/hosts && getent hosts extra"]).exit_code == 0
    bed.revert()  # a fresh testbed has a fresh hosts file; the image still has none
    assert bed.exec(["sh", "-c", "grep -c extra /etc/hosts"]).stdout == b"0\n"
    assert not (lower / "etc" / "hosts").exists() and not (lower / "etc" / "hostname").exists()


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


def test_a_file_busy_for_a_moment_starts_once_it_is_free(bed: SandboxTestbed, tmp_path: Path) -> None:
    script = tmp_path / "t.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o755)
    bed.copy_in(script, "/var/tmp/t.sh")
    assert bed.merged is not None
    copy = bed.merged / "var/tmp/t.sh"
    writer = os.open(copy, os.O_WRONLY)  # as a process forked for another test holds it until that one execs
    threading.Timer(0.3, os.close, (writer,)).start()
    res = bed.exec(["/var/tmp/t.sh"])
    assert (res.exit_code, res.stdout) == (0, b"ran\n"), res.stderr
    writer = os.open(copy, os.O_WRONLY)
    try:
        held = bed.exec(["/var/tmp/t.sh"])  # busy for good: the refusal is the answer, after a few tries
    finally:
        os.close(writer)
    assert (held.exit_code, held.stdout, held.stderr) == (1, b"", b"bwrap: execvp /var/tmp/t.sh: Text file busy\n")


def test_network_is_loopback_only_unless_the_test_needs_it(backend: SandboxBackend, handle: ImageHandle) -> None:
    def ifaces(needs: frozenset[str]) -> tuple[set[str], frozenset[str]]:
        with backend.create(handle, needs) as tb:
            out = tb.exec(["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1"]).stdout
            return {x.strip() for x in out.decode().split()}, tb.capabilities()

    alone, caps = ifaces(frozenset())
    assert alone == {"lo"} and "network" not in caps  # decided when the testbed was made
    host = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    wired, caps = ifaces(frozenset({"network"}))
    assert wired == host and "network" in caps


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


@pytest.mark.skipif(cgroup_mode() is None and not os.environ.get("CI"), reason="cgroups not writable here")
def test_memory_and_pids_limits_name_themselves(backend: SandboxBackend, handle: ImageHandle) -> None:
    hog = ["sh", "-c", "head -c 200000000 /dev/zero | tail -n 1 | wc -c"]
    with backend.create(handle) as tb:
        assert tb.exec(hog, timeout=60).stdout == b"200000000\n"
        assert tb.limit_notes() == []
    with backend.create(handle, limits=Limits(memory=64 << 20, pids=32)) as tb:
        assert tb.exec(hog, timeout=60).stdout != b"200000000\n"  # tail OOM-killed at 64 MiB
        notes = tb.limit_notes()
        assert len(notes) == 1 and notes[0].startswith("memory limit (64 MiB) reached") and "OOM" in notes[0]
        r = tb.exec(["sh", "-c", "for i in $(seq 100); do sleep 2 & done; wait"], timeout=60)
        assert b"fork" in r.stderr.lower()
        assert tb.limit_notes()[0].startswith("pids limit (32) reached")


def test_broken_lower_layer_is_a_testbed_error(handle: ImageHandle, tmp_path: Path) -> None:
    from imageci.errors import TestbedError

    tb = SandboxTestbed(handle, tmp_path / "missing-rootfs", tmp_path / "wr")
    with pytest.raises(TestbedError, match="overlayfs mount failed"):
        tb.open()
    assert list((tmp_path / "wr").iterdir()) == []


# ---- hardening: a test is untrusted code ------------------------------------------------------

DOCKER_CAPS = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6, "SETUID": 7,
               "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_CHROOT": 18, "MKNOD": 27,
               "AUDIT_WRITE": 29, "SETFCAP": 31}


def _caps(bed: SandboxTestbed) -> int:
    status = bed.exec(["cat", "/proc/self/status"]).stdout.decode()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)


def test_a_test_runs_with_docker_s_default_capabilities_and_cannot_touch_the_kernel(bed: SandboxTestbed) -> None:
    assert _caps(bed) == sum(1 << bit for bit in DOCKER_CAPS.values())
    host = {k: Path(f"/proc/sys/{k}").read_text() for k in ("vm/swappiness", "kernel/core_pattern")}
    attack = bed.exec(["sh", "-c", """
        echo 13 > /proc/sys/vm/swappiness && echo wrote-swappiness
        echo '|/tmp/evil' > /proc/sys/kernel/core_pattern && echo wrote-core-pattern
        mount -o remount,rw /proc/sys && echo remounted
        mount -t proc proc /mnt && echo mounted-proc
        umount /proc/sys && echo unmounted
        echo 1 > /proc/sysrq-trigger && echo sysrq
        mknod /tmp/disk b 8 0 && echo mknod-block
        mknod /tmp/null c 1 3 && echo mknod-char
        unshare -n true && echo unshared
        cat /proc/keys /proc/timer_list 2>/dev/null | wc -c
        grep ' / ' /proc/mounts
    """])
    out = attack.stdout.decode()
    for done in ("wrote-swappiness", "wrote-core-pattern", "remounted", "mounted-proc", "unmounted", "sysrq",
                 "mknod-block", "unshared"):
        assert done not in out, attack.stdout + attack.stderr
    assert "mknod-char" in out  # character devices are allowed, as under Docker
    assert "\n0\n" in out  # masked /proc entries read empty
    assert "/proc/self/fd/" in out and str(bed.dir) not in out and str(bed.slot.path) not in out  # type: ignore[union-attr]
    assert {k: Path(f"/proc/sys/{k}").read_text() for k in host} == host  # the host is unharmed
    # setuid programs and file capabilities grant nothing (no_new_privs)
    assert "NoNewPrivs:\t1" in bed.exec(["cat", "/proc/self/status"]).stdout.decode()


def test_privileged_tests_opt_out_of_the_hardening(backend: SandboxBackend, handle: ImageHandle) -> None:
    assert "privileged" in backend.capabilities(handle)
    with backend.create(handle, frozenset({"privileged"})) as tb:
        assert _caps(tb) > sum(1 << bit for bit in DOCKER_CAPS.values())
        assert tb.exec(["test", "-w", "/proc/sys/vm/swappiness"]).exit_code == 0  # would reach the host kernel
        assert tb.exec(["sh", "-c", "mknod /tmp/disk b 8 0"]).exit_code == 0
    with backend.create(handle) as tb:
        assert tb.exec(["test", "-w", "/proc/sys/vm/swappiness"]).exit_code == 1


def test_a_test_gets_enospc_at_its_disk_budget_never_a_full_host_disk(backend: SandboxBackend,
                                                                      handle: ImageHandle) -> None:
    fill = ["sh", "-c", "dd if=/dev/zero of=/var/tmp/fill bs=1M count=200 2>&1; echo rc=$?"]
    with backend.create(handle, limits=Limits(disk=64 << 20)) as tb:
        r = tb.exec(fill, timeout=120)
        assert b"No space left on device" in r.stdout and b"rc=1" in r.stdout
        assert tb.limit_notes()[0].startswith("disk limit (64 MiB) reached")
        # its /etc/hosts is the testbed's own file, on the same disk: no way around the limit either
        hosts = tb.exec(["sh", "-c", "rm /var/tmp/fill; dd if=/dev/zero of=/etc/hosts bs=1M count=200 2>&1; "
                                     "echo rc=$?"], timeout=120)
        assert b"No space left on device" in hosts.stdout and b"rc=1" in hosts.stdout, hosts.stdout
        slot = tb.slot
        assert slot is not None and slot.image.stat().st_blocks * 512 < 80 << 20  # the host holds at most that
        # with a journal: without one, ext4 scans past every inode freed in the last minute for each file made,
        # seconds per tree when a testbed writes into the slot that the one before it emptied
        features = subprocess.run(["dumpe2fs", "-h", str(slot.image)], capture_output=True, text=True).stdout
        assert "has_journal" in next(line for line in features.splitlines() if line.startswith("Filesystem features"))
    with backend.create(handle, limits=Limits(disk=512 << 20)) as tb:  # a test may declare more
        assert b"rc=0" in tb.exec(fill, timeout=120).stdout
        assert tb.limit_notes() == []
    assert not slot.path.exists() or not any(p.name != "lost+found" for p in slot.path.iterdir())


def test_output_is_read_with_bounded_memory_and_cut_with_a_marker(backend: SandboxBackend,
                                                                  handle: ImageHandle) -> None:
    with backend.create(handle, limits=Limits(log=1 << 20, output=64 << 20)) as tb:
        r = tb.exec(["sh", "-c", "seq 1 3000000; echo last-line"], timeout=120)  # ~21 MB
        assert r.exit_code == 0 and tb.limit_notes() == []
        assert len(r.stdout) < (1 << 19) + 300
        assert r.stdout.startswith(b"1\n2\n3\n") and r.stdout.endswith(b"last-line\n")
        assert b"bytes cut here" in r.stdout
        endless = tb.exec(["sh", "-c", "yes imageci"], timeout=120)
        assert endless.exit_code is None and not endless.timed_out
        notes = tb.limit_notes()
        assert notes and notes[0].startswith("output limit (64 MiB) reached")


def test_a_saved_layer_stacks_under_a_fresh_testbed_with_its_deletions(backend: SandboxBackend,
                                                                      handle: ImageHandle, tmp_path: Path) -> None:
    layer = tmp_path / "layers" / "one"
    with backend.create(handle) as a:
        assert a.supports_layers
        a.exec(["sh", "-c", "echo junk > /etc/before-reset"])
        a.reset()  # what was written before is not part of the layer
        assert a.exec(["test", "-e", "/etc/before-reset"]).exit_code == 1
        assert a.exec(["sh", "-c", "rm /etc/os-release && echo added > /etc/added && "
                                   "mkdir -p /var/tmp/skip && touch /var/tmp/skip/x"]).exit_code == 0
        a.export_layer(layer, exclude=("/var/tmp/skip",))
    assert (layer / "etc" / "added").read_text() == "added\n" and not (layer / "var" / "tmp" / "skip").exists()
    with backend.create(handle) as b:
        b.reset(layer)
        assert b.exec(["cat", "/etc/added"]).stdout == b"added\n"
        assert b.exec(["test", "-e", "/etc/os-release"]).exit_code == 1  # the whiteout hides the image's file
        assert b.exec(["sh", "-c", "echo changed > /etc/added"]).exit_code == 0
        assert "/proc/self/fd/" in b.exec(["cat", "/proc/mounts"]).stdout.decode()  # no host path shown
    assert (layer / "etc" / "added").read_text() == "added\n"  # a layer is only ever read
    assert (backend.rootfs_cache / handle.digest / "etc" / "os-release").exists()
