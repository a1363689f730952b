"""The podman testbed with real podman (runc) and the example images."""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.checks.base import Check
from imageci.checks.builtin import BuiltinCheck
from imageci.checks.script import ScriptCheck
from imageci.definitions.suite import load_suite
from imageci.engine.runner import Engine
from imageci.formats.oci import write_layout
from imageci.fs import mounts_below
from imageci.owners import process_owner
from imageci.store.models import Version
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.podman import PodmanBackend, PodmanTestbed
from imageci.testbeds.podmanstore import explain_failure
from imageci.testbeds.registry import make_backend
from imageci.verdicts import Verdict

from conftest import EXAMPLE, REPO, Env, build_example, require_tool, write_suite

pytestmark = pytest.mark.root  # rootful podman


@pytest.fixture(autouse=True, scope="module")
def _podman() -> None:
    require_tool(shutil.which("podman") is not None, "podman")
VM_DEF = REPO / "examples" / "debian-bookworm-vm" / "image.yaml"


@pytest.fixture(scope="module")
def handle(image_env: tuple[Env, Version]) -> ImageHandle:
    e, version = image_env
    return Engine(e.catalog, e.store, {}).image_handle(version)


@pytest.fixture(scope="module")
def backend(image_env: tuple[Env, Version]) -> PodmanBackend:
    e, _ = image_env
    return PodmanBackend(e.home, e.settings.rootfs_cache)


def live_containers(home: Path) -> list[str]:
    """Containers in any of this home's disk slots' storages."""
    names = []
    for conf in (home / "tmp" / "disks").glob("*/storage.conf"):
        out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                             env={**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)})
        names += out.stdout.split()
    return names


@pytest.fixture
def bed(backend: PodmanBackend, handle: ImageHandle) -> Iterator[PodmanTestbed]:
    tb = backend.create(handle)
    tb.open()
    yield tb
    tb.close()


def test_oci_layout_carries_the_tested_bytes(handle: ImageHandle, tmp_path: Path) -> None:
    a = write_layout(tmp_path / "a", handle.rootfs_tar, handle.digest, tag="t")
    b = write_layout(tmp_path / "b", handle.rootfs_tar, handle.digest, tag="t")
    assert a.manifest_digest == b.manifest_digest  # reproducible
    out = subprocess.run(["skopeo", "inspect", f"oci:{a.layout}:t"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["Digest"] == f"sha256:{a.manifest_digest}"
    assert info["Layers"] == [f"sha256:{handle.digest}"]  # the layer is the tested tarball itself
    assert (a.layout / "blobs" / "sha256" / handle.digest).stat().st_ino == handle.rootfs_tar.stat().st_ino


def test_exec_in_a_fresh_container_without_network(bed: PodmanTestbed) -> None:
    r = bed.exec(["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (r.exit_code, r.stdout, r.stderr) == (5, b"out\n", b"err\n")
    assert bed.exec(["cat"], stdin=b"in").stdout == b"in"
    ifaces = bed.exec(["sh", "-c", "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"]).stdout.split()
    assert ifaces == [b"lo"]
    assert bed.exec(["sh", "-c", "echo $IMAGECI_TESTBED $FOO"], env={"FOO": "x"}).stdout == b"podman x\n"


def test_copy_in_out_and_revert(bed: PodmanTestbed, tmp_path: Path) -> None:
    src = tmp_path / "t.sh"
    src.write_text("#!/bin/sh\necho inside > /tmp/made\n")
    src.chmod(0o755)
    bed.copy_in(src, "/var/tmp/imageci/tests/t.sh")
    assert bed.exec(["/var/tmp/imageci/tests/t.sh"]).exit_code == 0
    # a tree into a directory not there yet, then another into the same one: made, then merged (as in the
    # sandbox); the parents that were there keep their modes (/var/tmp: 1777)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a").write_text("a")
    (tree / "link").symlink_to("sub/a")
    bed.copy_in(tree, "/opt/new/deep/tree")
    (tree / "sub" / "a").unlink()
    (tree / "b").write_text("b")
    bed.copy_in(tree, "/opt/new/deep/tree/")
    listing = bed.exec(["sh", "-c", "cd /opt/new/deep/tree && cat sub/a b link && stat -c '%a %U %n' /var/tmp "
                                    "/opt/new/deep /opt/new/deep/tree/b"]).stdout.decode()
    assert listing == "aba" "1777 root /var/tmp\n755 root /opt/new/deep\n644 root /opt/new/deep/tree/b\n"
    bed.copy_out("/tmp/made", tmp_path / "made")
    assert (tmp_path / "made").read_text() == "inside\n"
    bed.revert()
    assert bed.exec(["test", "-e", "/tmp/made"]).exit_code == 1


def test_a_file_goes_in_from_the_host_where_the_container_s_links_lead_never_out(
        bed: PodmanTestbed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script is copied in through the container's root, no `podman cp`: links the container holds (absolute ones
    to a path that is also the host's, a link where the file goes) are followed inside it, never on the host."""
    import imageci.testbeds.podman as podman_module

    def no_cp(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        assert argv[1] != "cp", argv
        return run_podman(argv, **kw)  # type: ignore[arg-type]

    run_podman = podman_module.run_podman
    monkeypatch.setattr(podman_module, "run_podman", no_cp)
    host = tmp_path / "host"  # a directory of the host's; the container gets one at the same path, and links to it
    host.mkdir()
    q = shlex.quote(str(host))  # (CI's test homes have spaces in their paths)
    made = bed.exec(["sh", "-c", f"mkdir -p {q} /opt && ln -s {q} /opt/escape && ln -s {q}/target /opt/f"])
    assert made.exit_code == 0, made.stderr
    src = tmp_path / "t.sh"
    src.write_text("#!/bin/sh\necho ran\n")
    src.chmod(0o750)
    bed.copy_in(src, "/opt/escape/deep/t.sh")
    bed.copy_in(src, "/opt/f")
    assert bed.exec(["/opt/escape/deep/t.sh"]).stdout == b"ran\n"
    seen = bed.exec(["sh", "-c", f"stat -c '%a %U %F' {q}/deep/t.sh {q}/deep /opt/f; ls {q}"]).stdout
    assert seen.decode() == "750 root regular file\n755 root directory\n750 root regular file\ndeep\n"
    assert list(host.iterdir()) == []  # the host's directory of that name: untouched


def test_timeout_stops_the_container_and_close_removes_it(backend: PodmanBackend, handle: ImageHandle) -> None:
    tb = backend.create(handle)
    tb.open()
    name = tb.container
    r = tb.exec(["sh", "-c", "sleep 300 & sleep 301; wait"], timeout=2)
    assert r.timed_out and r.exit_code is None
    env = tb.env
    tb.close()
    assert name not in live_containers(backend.tmp.parent)
    gone = subprocess.run(["podman", "container", "exists", str(name)], env=env)
    assert gone.returncode == 1


def test_an_image_removed_from_the_store_behind_imageci_s_back_is_copied_again(backend: PodmanBackend,
                                                                              handle: ImageHandle) -> None:
    """Once copied, an image is not asked for again (a podman process for every test); a container that cannot
    find it (the store emptied, `podman rmi`) has it copied again, and the test runs."""
    tag = backend.store.ensure(handle)
    subprocess.run(["podman", "rmi", "-f", tag], env=backend.store.env(), check=True, capture_output=True)
    tb = backend.create(handle)
    tb.open()
    try:
        assert tb.exec(["cat", "/etc/os-release"]).exit_code == 0
    finally:
        tb.close()
    assert subprocess.run(["podman", "image", "exists", tag], env=backend.store.env()).returncode == 0


def test_misconfigured_rlimits_get_an_error_that_names_the_fix(handle: ImageHandle, backend: PodmanBackend) -> None:
    tag = backend.store.ensure(handle)
    too_high = resource.getrlimit(resource.RLIMIT_NOFILE)[1] + 1
    res = subprocess.run(["podman", "run", "--rm", "--pull", "never", "--runtime", "runc", "--ulimit",
                          f"nofile={too_high}:{too_high}", "--entrypoint", "", tag, "true"],
                         capture_output=True, text=True, env=backend.store.env())
    if res.returncode == 0:
        pytest.skip("this host lets containers raise rlimits (CAP_SYS_RESOURCE): nothing to misconfigure")
    hint = explain_failure(res.stderr)
    assert hint is not None and "scripts/host-setup.sh" in hint
    assert explain_failure("Error: crun: cannot set cgroup: ...") is not None
    assert explain_failure("Error: something unrelated") is None


def test_systemd_mode_runs_services(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    """isolation-container tests get systemd as PID 1 (VM example image)."""
    e, _ = image_env
    vm = build_example(e, VM_DEF)
    engine = Engine(e.catalog, e.store, {"podman": make_backend("podman", e.settings)}, jobs=2)
    suite = load_suite(VM_DEF.parent / "suite")
    checks: list[Check] = [ScriptCheck(s) for s in suite.select(["systemd-running", "service-starts", "os-release"])]
    checks += [BuiltinCheck("boot-multi-user"), BuiltinCheck("no-failed-units"), BuiltinCheck("console-clean"),
               BuiltinCheck("journal-clean", {"priority": "err"})]
    report = engine.run(vm, checks, ["podman"], rerun_all=True)
    got = {r.test_id: (r.verdict, r.reason) for r in report.results}
    assert got == {"systemd-running": (Verdict.PASS, ""), "service-starts": (Verdict.PASS, ""),
                   "os-release": (Verdict.PASS, ""), "boot-multi-user": (Verdict.PASS, ""),
                   "no-failed-units": (Verdict.PASS, ""), "journal-clean": (Verdict.PASS, ""),
                   "console-clean": (Verdict.SKIP, "testbed podman lacks: isolation-machine")}
    assert live_containers(e.home) == []  # every container removed
    minimal = next(v for v in e.catalog.versions() if v.product.name == "debian-bookworm-minimal")
    caps = engine.backends["podman"].capabilities(engine.image_handle(minimal))
    assert "isolation-container" not in caps  # no systemd in the minimal image


def test_cli_suite_on_podman(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    res = e.cli("test", f"{version.product.name}@{version.serial}", "--testbed", "podman",
                "--suite", str(EXAMPLE / "suite"), "--rerun-all")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "17 pass" in res.stdout  # 13 scripts + 4 built-ins
    assert live_containers(e.home) == []  # this home's containers, not the whole host's
    assert mounts_below(e.home / "podman") == []  # nor a mount of its storage left behind: the home can go
    mine = process_owner(e.settings.tmp_dir).token  # this pytest process's own testbeds share the home
    assert [p for p in (e.settings.tmp_dir / "disks").iterdir() if not p.name.startswith(mine)] == []


def test_journal_clean_catches_an_error_logged_in_the_same_testbed(image_env: tuple[Env, Version],
                                                                   tmp_path: Path) -> None:
    e, _ = image_env
    vm = build_example(e, VM_DEF)
    d = tmp_path / "s"
    d.mkdir()
    (d / "logs-error.sh").write_text("#!/bin/sh\n# imageci-needs: isolation-container\n"
                                     "logger -p user.err 'imageci-probe: something broke'\nsleep 1\n")
    (d / "logs-error.sh").chmod(0o755)
    checks: list[Check] = [ScriptCheck(s) for s in load_suite(d).tests]
    checks.append(BuiltinCheck("journal-clean", {"priority": "err"}))
    engine = Engine(e.catalog, e.store, {"podman": make_backend("podman", e.settings)}, jobs=1, fresh="suite")
    report = engine.run(vm, checks, ["podman"], rerun_all=True)
    got = {r.test_id: (r.verdict, r.reason) for r in report.results}
    assert got["logs-error"] == (Verdict.PASS, "")
    assert got["journal-clean"][0] == Verdict.FAIL and "imageci-probe: something broke" in got["journal-clean"][1]


def test_limits_labels_and_hardening_of_a_container(backend: PodmanBackend, handle: ImageHandle, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from imageci.definitions.limits import Limits
    from imageci.owners import home_id

    here = tmp_path / "cwd"  # where imageci was started: podman's conmon must not write into it
    here.mkdir()
    monkeypatch.chdir(here)
    tb = backend.create(handle, limits=Limits(disk=64 << 20, memory=64 << 20))
    tb.open()
    try:
        labels = json.loads(subprocess.run(["podman", "inspect", "--format", "{{json .Config.Labels}}",
                                            str(tb.container)], capture_output=True, text=True, env=tb.env,
                                           check=True).stdout)
        assert labels["io.imageci.home"] == home_id(backend.tmp.parent)
        assert labels["io.imageci.owner"] == process_owner(backend.tmp).token
        r = tb.exec(["sh", "-c", "dd if=/dev/zero of=/var/tmp/fill bs=1M count=200 2>&1; echo rc=$?"], timeout=120)
        assert b"No space left on device" in r.stdout
        assert tb.limit_notes()[0].startswith("disk limit (64 MiB) reached")
        tb.exec(["sh", "-c", "rm -f /var/tmp/fill; head -c 200000000 /dev/zero | tail -n 1 | wc -c"], timeout=120)
        assert tb.limit_notes()[0].startswith("memory limit (64 MiB) reached")
        assert list(here.iterdir()) == []  # (conmon writes a file `oom` into its working directory)
        assert tb.exec(["sh", "-c", "echo 1 > /proc/sys/vm/swappiness"]).exit_code != 0  # podman's own hardening
    finally:
        tb.close()


def test_network_is_decided_by_the_test_s_needs_the_same_on_every_backend(
        image_env: tuple[Env, Version], tmp_path: Path) -> None:
    """One decision (capabilities.access) for every backend: the same test sees the same network."""
    e, version = image_env
    count = "n=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | grep -vx lo | wc -l)"
    suite = load_suite(write_suite(tmp_path / "s", {
        "wired.sh": f"#!/bin/sh\n# imageci-needs: network\n{count}\ntest $n -ge 1\n",
        "alone.sh": f"#!/bin/sh\n{count}\ntest $n -eq 0\n"}))
    engine = Engine(e.catalog, e.store, {n: make_backend(n, e.settings) for n in ("sandbox", "podman")}, jobs=2)
    report = engine.run(version, [ScriptCheck(t) for t in suite.tests], ["sandbox", "podman"], rerun_all=True)
    verdicts = {(r.test_id, r.testbed): r.verdict for r in report.results}
    assert verdicts == {(t, tb): Verdict.PASS for t in ("wired", "alone") for tb in ("sandbox", "podman")}, \
        [(r.test_id, r.testbed, r.reason) for r in report.results]


def test_a_gpu_test_gets_the_gpus_through_cdi_or_is_skipped_saying_why(image_env: tuple[Env, Version],
                                                                        backend: PodmanBackend,
                                                                        handle: ImageHandle) -> None:
    """The example's nvidia-smi check: on a host with an NVIDIA GPU and a CDI specification it runs in a
    container given `--device nvidia.com/gpu=all` and passes; elsewhere (CI) it is skipped with the reason."""
    from imageci.testbeds.gpu import why_no_gpu

    given = backend.create(handle, frozenset({"gpu"}))
    plain = backend.create(handle)
    assert "nvidia.com/gpu=all" in given.run_argv("n", "o") and "--device" not in plain.run_argv("n", "o")
    assert "gpu" in given.capabilities() and "gpu" not in plain.capabilities()
    e, version = image_env
    suite = EXAMPLE / "gpu-suite"
    res = e.cli("test", f"{version.product.name}@{version.serial}", "--suite", str(suite), "--testbed", "podman",
                "--rerun-all")
    no_gpu = why_no_gpu()
    if no_gpu is None:
        assert res.returncode == 0 and "pass  nvidia-smi" in res.stdout, res.stdout + res.stderr
    else:
        assert res.returncode == 4, res.stdout + res.stderr  # nothing ran: skipped, never failed
        assert f"testbed podman lacks: gpu ({no_gpu})" in res.stdout, res.stdout
