"""The lxd testbed: each test in a fresh ephemeral LXD container that the real
LXD daemon pulled, by fingerprint, from imageci's own feed (the run's
simplestreams feed over HTTPS); revert by a fresh instance; everything it made
is deleted, and only that."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from imageci.checks.script import ScriptCheck
from imageci.definitions.limits import Limits
from imageci.definitions.suite import load_suite
from imageci.engine.runner import Engine
from imageci.errors import TestbedError
from imageci.owners import home_id, process_owner
from imageci.store.catalog import NewArtifact
from imageci.store.models import Version
from imageci.testbeds.base import ImageHandle
from imageci.testbeds.lxd import LxdBackend
from imageci.testbeds.lxdclient import HOME_KEY, LXD_CACHE, OWNER_KEY
from imageci.testbeds.registry import make_backend
from imageci.verdicts import Verdict

from conftest import (
    REPO,
    UNIT_FAILS,
    Env,
    build_example,
    busybox_rootfs,
    dep8_tree,
    make_env,
    require_tool,
    write_suite,
)

pytestmark = pytest.mark.root  # the LXD daemon runs as root

APPLETS = ("sh", "cat", "true", "sleep", "ps", "ls", "echo", "id", "rm", "test", "[", "hostname")
VM_DEF = REPO / "examples" / "debian-bookworm-vm" / "image.yaml"
LXC_WITHOUT_THE_WARNING = """#!/bin/sh
if [ "$1" = launch ]; then
  err=$(mktemp)
  {lxc} "$@" 2>"$err"; rc=$?
  grep -v -e "doesn't have any network attached" -e 'lxc network' -e '^[[:space:]]*$' "$err" >&2
  rm -f "$err"
  exit $rc
fi
exec {lxc} "$@"
"""


def lxc_json(*args: str) -> object:
    done = subprocess.run(["lxc", *args, "--format", "json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fingerprints() -> set[str]:
    return {str(i["fingerprint"]) for i in lxc_json("image", "list", "local:")}  # type: ignore[union-attr]


def instances_of(home: Path) -> list[str]:
    return [str(i["name"]) for i in lxc_json("list", "local:")  # type: ignore[union-attr]
            if (i.get("config") or {}).get(HOME_KEY) == home_id(home)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Version]]:
    """A home with a busybox image imported (so it has its LXD form); LXD up."""
    require_tool(shutil.which("lxc") is not None, "lxd")
    up = subprocess.run([str(REPO / "scripts" / "lxd-up.sh")], capture_output=True, text=True)
    assert up.returncode == 0, up.stdout + up.stderr
    base = tmp_path_factory.mktemp("lxd")
    e = make_env(base / "home")
    marker = f"lxd-{secrets.token_hex(4)}"  # a fingerprint of this session's own
    done = e.cli("import", "tiny", str(busybox_rootfs(base / "tiny.tar", marker, APPLETS)))
    assert done.returncode == 0, done.stdout + done.stderr
    yield e, e.catalog.versions("tiny")[0]
    e.catalog.close()


def test_each_test_gets_a_fresh_ephemeral_container_pulled_from_the_feed(tiny: tuple[Env, Version],
                                                                         tmp_path: Path) -> None:
    e, version = tiny
    fingerprint = json.loads(version.build_info or "{}")["lxd"]["fingerprint"]
    assert fingerprint not in fingerprints()
    d = write_suite(tmp_path / "s", {
        "a-write.sh": "#!/bin/sh\necho dirty > /root/dirty\n",
        "b-fresh.sh": "#!/bin/sh\n[ ! -e /root/dirty ] || { echo 'a test saw the last one' >&2; exit 1; }\n",
        "marker.sh": "#!/bin/sh\ncat /etc/imageci-marker; grep -q lxd- /etc/imageci-marker\n",
        "no-network.sh": "#!/bin/sh\n[ \"$(ls /sys/class/net)\" = lo ] || { ls /sys/class/net >&2; exit 1; }\n",
        "root.sh": "#!/bin/sh\n[ \"$(id -u)\" = 0 ] && [ \"$IMAGECI_TESTBED\" = lxd ]\n",
        "fails.sh": "#!/bin/sh\necho boom >&2\nexit 3\n",
    })
    done = e.cli("test", f"tiny@{version.serial}", "--testbed", "lxd", "--suite", str(d), "-j", "2")
    assert done.returncode == 1, done.stdout + done.stderr  # one test fails
    got = {a["test"]: a["verdict"] for a in json.loads(e.cli("results", f"tiny@{version.serial}", "--json").stdout)
           ["attempts"]}
    assert got == {"a-write": "pass", "b-fresh": "pass", "marker": "pass", "no-network": "pass", "root": "pass",
                   "fails": "fail"}, done.stdout
    assert instances_of(e.home) == []  # every instance deleted
    assert fingerprint not in fingerprints()  # and the image the run pulled (ours: the marker is this session's)


def test_the_container_is_the_published_image_with_the_test_s_limits(tiny: tuple[Env, Version]) -> None:
    e, version = tiny
    engine = Engine(e.catalog, e.store, {})
    handle: ImageHandle = engine.image_handle(version)
    backend = LxdBackend(e.home, e.settings.rootfs_cache)
    assert backend.why_not(handle) is None
    assert backend.capabilities(handle) == {"root", "revert", "arch:amd64"}  # no systemd: no isolation-container
    ours = json.loads(version.build_info or "{}")["lxd"]["fingerprint"]
    tb = backend.create(handle, limits=Limits(memory=96 << 20, pids=64))
    tb.open()
    try:
        inst = lxc_json("list", "local:", str(tb.instance))[0]  # type: ignore[index]
        assert inst["ephemeral"] is True and inst["status"] == "Running"
        assert inst["config"]["volatile.base_image"] == json.loads(version.build_info or "{}")["lxd"]["fingerprint"]
        assert inst["config"][OWNER_KEY] == process_owner(e.settings.tmp_dir).token
        assert inst["config"]["limits.memory"] == f"{96 << 20}B" and inst["config"]["limits.processes"] == "64"
        assert set(inst["expanded_devices"]) == {"root"}  # no network device, whatever the default profile has
        # the image ships no /etc/hosts: the instance gets one, as the sandbox and podman give theirs
        hosts = tb.exec(["cat", "/etc/hosts", "/etc/hostname"]).stdout.decode()
        assert "127.0.0.1 localhost\n" in hosts and hosts.endswith(f"127.0.1.1 {tb.instance}\n{tb.instance}\n")
        r = tb.exec(["sh", "-c", "cat; echo err >&2; exit 4"], stdin=b"in\n", cwd="/tmp")
        assert (r.exit_code, r.stdout, r.stderr) == (4, b"in\n", b"err\n")
        src = Path(e.home / "payload")
        (src / "sub").mkdir(parents=True)
        (src / "sub" / "f").write_text("hello")
        tb.copy_in(src, "/opt/payload")
        assert tb.exec(["cat", "/opt/payload/sub/f"]).stdout == b"hello"
        tb.copy_out("/opt/payload", e.home / "back")
        assert (e.home / "back" / "sub" / "f").read_text() == "hello"
        first = tb.instance
        tb.exec(["sh", "-c", "echo x > /root/x"])
        tb.revert()
        assert tb.instance != first and tb.exec(["ls", "/root"]).stdout == b""
        r = tb.exec(["sleep", "60"], timeout=2)
        assert r.timed_out and r.exit_code is None
        with pytest.raises(TestbedError):
            tb.exec(["true"])  # the container was stopped with the command
    finally:
        tb.close()
        backend.finish()
    assert instances_of(e.home) == []
    assert ours not in fingerprints()


def test_first_pulls_at_once_from_a_fresh_feed_all_succeed(tiny: tuple[Env, Version]) -> None:
    """LXD 5.0 makes its cache directory for a simplestreams URL with check-then-mkdir: several first pulls
    at once from a new feed raced ("mkdir …: file exists", seen in CI with -j 2). Each round is a new run
    feed (a new URL) and four testbeds opening together."""
    e, version = tiny
    handle = Engine(e.catalog, e.store, {}).image_handle(version)
    ours = json.loads(version.build_info or "{}")["lxd"]["fingerprint"]
    for _ in range(3):
        backend = LxdBackend(e.home, e.settings.rootfs_cache)
        beds = [backend.create(handle) for _ in range(4)]
        cache = LXD_CACHE / hashlib.sha256(backend.feed().url.encode()).hexdigest()
        try:
            with ThreadPoolExecutor(len(beds)) as pool:
                errors = [f.exception() for f in [pool.submit(tb.open) for tb in beds]]
            assert errors == [None] * len(beds)
            assert all(tb.exec(["cat", "/etc/imageci-marker"]).exit_code == 0 for tb in beds)
            assert (cache / "index.json").is_file()  # the daemon's cache of this feed …
        finally:
            for tb in beds:
                tb.close()
            backend.finish()
        assert not cache.exists()  # … removed with the run
    assert instances_of(e.home) == []
    assert ours not in fingerprints()


def test_gc_deletes_a_dead_owner_s_instance_and_keeps_others(tiny: tuple[Env, Version]) -> None:
    e, version = tiny
    engine = Engine(e.catalog, e.store, {})
    backend = LxdBackend(e.home, e.settings.rootfs_cache)
    tb = backend.create(engine.image_handle(version))
    tb.open()
    other = LxdBackend(e.home / "other-home", e.settings.rootfs_cache)
    tb2 = other.create(engine.image_handle(version))
    tb2.open()
    try:
        dead = secrets.token_hex(6)  # no process holds this token
        subprocess.run(["lxc", "config", "set", str(tb.instance), OWNER_KEY, dead], check=True)
        subprocess.run(["lxc", "config", "set", str(tb2.instance), OWNER_KEY, dead], check=True)  # another home's
        done = e.cli("gc", "--force")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"removed LXD instance {tb.instance}" in done.stdout
        assert instances_of(e.home) == []
        assert instances_of(e.home / "other-home") == [tb2.instance]  # not this home's: untouched
    finally:
        tb.close()
        tb2.close()
        backend.finish()
        other.finish()


def test_a_failing_test_s_container_is_held_entered_released_and_ends_with_its_time(
        tiny: tuple[Env, Version], tmp_path: Path) -> None:
    """--hold-on-failure on lxd: the failing test's container, entered by the printed command, released; held
    again for a few seconds, gone after them. `imageci shell` in a fresh container of the version."""
    e, version = tiny
    ref = f"tiny@{version.serial}"
    suite = write_suite(tmp_path / "s", {"fails.sh": "#!/bin/sh\necho 'what the test saw' > /tmp/evidence\nexit 1\n"})
    for duration in ("10m", "4s"):
        done = e.cli("run", ref, "fails", "--suite", str(suite), "--testbed", "lxd", "--rerun-all",
                     f"--hold-on-failure={duration}")
        printed = re.search(r"held fails \[lxd\] until \S+: enter it with imageci attach (\d+) ", done.stdout)
        assert done.returncode == 1 and printed, done.stdout + done.stderr
        assert len(instances_of(e.home)) == 1
        entered = e.cli("attach", printed.group(1), "--", "sh", "-c", "cat /tmp/evidence; exit 5")
        assert entered.returncode == 5 and entered.stdout == "what the test saw\n", entered
        if duration == "10m":
            assert e.cli("release", printed.group(1)).returncode == 0
    deadline = time.monotonic() + 60
    while instances_of(e.home) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert instances_of(e.home) == [] and json.loads(e.cli("held", "--json").stdout) == []
    shell = e.cli("shell", ref, "--testbed", "lxd", "--", "sh", "-c", "grep -q lxd- /etc/imageci-marker; exit 4")
    assert shell.returncode == 4 and instances_of(e.home) == [], shell


def test_what_cannot_run_on_lxd_is_skipped_with_the_reason(tiny: tuple[Env, Version], env: Env) -> None:
    e, version = tiny
    engine = Engine(e.catalog, e.store, {"lxd-vm": make_backend("lxd-vm", e.settings)})
    one = [ScriptCheck(s) for s in load_suite(write_suite(e.home / "one-test", {"t.sh": "#!/bin/sh\ntrue\n"})).tests]
    report = engine.run(version, one, ["lxd-vm"], rerun_all=True)
    (result,) = report.results
    assert result.verdict == Verdict.SKIP and "virtual machines" in result.reason
    # a version without its LXD form (made where mksquashfs was missing) is skipped, saying why
    v = env.catalog.register_version("bare", version.digest, [NewArtifact("rootfs", "rootfs.tar", version.digest,
                                                                          version.artifacts[0].size)],
                                     input_hash=None, definition=None,
                                     build_info={"lxd": {"error": "mksquashfs not found: install squashfs-tools"}})
    shutil.copytree(e.store.root, env.store.root, dirs_exist_ok=True)
    engine = Engine(env.catalog, env.store, {"lxd": make_backend("lxd", env.settings)})
    report = engine.run(v, one, ["lxd"], rerun_all=True)
    (result,) = report.results
    assert result.verdict == Verdict.SKIP and "mksquashfs not found" in result.reason
    done = e.cli("doctor", "--json")
    found = {f["name"]: f for f in json.loads(done.stdout)}
    assert found["LXD daemon"]["ok"] and "LXD 5." in found["LXD daemon"]["detail"]
    assert not found["LXD virtual machines (lxd-vm)"]["ok"]


@pytest.mark.slow
def test_a_systemd_image_passes_its_suite_and_the_builtins_on_lxd(image_env: tuple[Env, Version],
                                                                  tmp_path: Path) -> None:
    """The VM example's own suite (scripts + built-ins as its suite.yaml configures them), on lxd; then the
    machine's own complaints (a failed unit, a core dump) each in its own test's window in one container."""
    e, _ = image_env
    vm = build_example(e, VM_DEF)
    ref = f"{vm.product.name}@{vm.serial}"
    done = e.cli("test", ref, "--testbed", "lxd", "--rerun-all", "-j", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    attempts = json.loads(e.cli("results", ref, "--json").stdout)["attempts"]
    got = {a["test"]: (a["verdict"], a["reason"]) for a in attempts if a["testbed"] == "lxd"}
    passed = ("kernel-present", "os-release", "service-starts", "systemd-running", "boot-multi-user",
              "no-failed-units", "journal-clean", "login-works")
    assert got == {**{t: ("pass", "") for t in passed},
                   "no-ssh-host-keys": ("skip", "test skipped itself (exit 77)"),  # a booted system made its keys
                   "console-clean": ("skip", "testbed lxd lacks: isolation-machine")}
    suite = write_suite(tmp_path / "suite", {
        "a-unit-fails.sh": UNIT_FAILS,
        "b-crash.sh": "#!/bin/sh\nulimit -c unlimited\ncd /var/tmp\nsh -c 'kill -SEGV $$'\nexit 0\n",
        "c-quiet.sh": "#!/bin/sh\ntrue\n"}, "fresh: suite\n")  # one container for the three
    done = e.cli("test", ref, "--testbed", "lxd", "--suite", str(suite), "--rerun-all", "-j", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    attempts = json.loads(e.cli("results", ref, "--json", "a-unit-fails", "b-crash", "c-quiet").stdout)["attempts"]
    found = {a["test"]: [(f["kind"], f["text"]) for f in a["findings"]] for a in attempts}
    assert found == {"a-unit-fails": [("failed-unit", "imageci-fails.service failed: fails on purpose")],
                     "b-crash": [("coredump", "core dump: /var/tmp/core")], "c-quiet": []}
    assert instances_of(e.home) == []
    # what the run pulled is gone (the image is this home's unless another run tests the same bytes right now)
    assert json.loads(vm.build_info or "{}")["lxd"]["fingerprint"] not in fingerprints()


def test_isolation_container_dep8_verdicts_equal_autopkgtest_with_its_lxd_backend(image_env: tuple[Env, Version],
                                                                                  tmp_path: Path) -> None:
    """`--testbed auto` against the real autopkgtest with its LXD backend (autopkgtest-virt-lxd), on the same
    image (its LXD form, imported into the daemon): the same verdict for each test; imageci ran the plain test in
    the sandbox and the isolation-container ones in a container with an init."""
    require_tool(shutil.which("autopkgtest-virt-lxd") is not None, "autopkgtest")
    e, _ = image_env
    vm = build_example(e, VM_DEF)
    tree = dep8_tree(tmp_path / "src", "contained", {  # (named in this order below)
        "plain": ("", "test -d /usr"),
        "init-runs": ("isolation-container", 'test "$(cat /proc/1/comm)" = systemd'),
        "starts-a-unit": ("isolation-container, needs-root",  # (systemctl over systemd's own socket: no D-Bus here)
                          "systemctl restart systemd-journald && systemctl is-active --quiet systemd-journald"),
        "fails-in-a-container": ("isolation-container", 'test "$(cat /proc/1/comm)" = nonsense'),
    })
    ref = f"{vm.product.name}@{vm.serial}"
    names = ("plain", "init-runs", "starts-a-unit", "fails-in-a-container")
    done = e.cli("run", ref, *(f"contained/{t}" for t in names), "--dep8", str(tree), "--testbed", "auto",
                 "--rerun-all")
    assert done.returncode == 1, done.stdout + done.stderr  # the one that fails
    run = int(re.search(r"^run (\d+):", done.stdout, re.M).group(1))  # type: ignore[union-attr]
    mine = {a["test"].removeprefix("contained/"): (a["testbed"], a["verdict"])
            for a in json.loads(e.cli("results", ref, "--json").stdout)["attempts"] if a["run"] == run}
    assert {t: tb for t, (tb, _v) in mine.items()} == {"plain": "sandbox", "init-runs": "podman",
                                                        "starts-a-unit": "podman", "fails-in-a-container": "podman"}
    lxd = Engine(e.catalog, e.store, {}).image_handle(vm).lxd
    assert lxd is not None
    theirs = _autopkgtest_lxd(tree, {f.kind: f.path for f in lxd.files}, tmp_path)
    assert theirs == {t: v for t, (_tb, v) in mine.items()}, (theirs, mine)
    assert theirs["fails-in-a-container"] == "fail" and theirs["starts-a-unit"] == "pass"


def _autopkgtest_lxd(tree: Path, files: dict[str, Path], tmp_path: Path) -> dict[str, str]:
    """The real autopkgtest's verdicts (test → pass/fail/…) for ``tree`` with its LXD backend, on the image whose
    LXD form is ``files`` (imported into the daemon for the run, deleted after)."""
    alias = f"imageci-parity-{secrets.token_hex(4)}"
    subprocess.run(["lxc", "image", "import", str(files["lxd-metadata"]), str(files["squashfs"]), "--alias", alias],
                   check=True, capture_output=True, timeout=300)
    # This daemon gives instances no network (its profile has no NIC). autopkgtest takes lxc's warning about
    # that for a failure (its lxc, for this run, drops that warning and nothing else), and starts
    # network-online.target, which would wait for a DHCP lease that never comes: a profile of the run masks
    # systemd-networkd-wait-online (an empty unit file over it). The image is the same.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "lxc").write_text(LXC_WITHOUT_THE_WARNING.format(lxc=shutil.which("lxc")))
    (shim / "lxc").chmod(0o755)
    (tmp_path / "masked.service").write_bytes(b"")
    before = {str(i["name"]) for i in lxc_json("list", "local:")}  # type: ignore[union-attr]
    subprocess.run(["lxc", "profile", "create", alias], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(["lxc", "profile", "device", "add", alias, "offline", "disk",
                        f"source={tmp_path}/masked.service",
                        "path=/etc/systemd/system/systemd-networkd-wait-online.service"], check=True,
                       capture_output=True, timeout=60)
        summary = tmp_path / "summary"
        # as a built tree (debian/files): autopkgtest prepares nothing, for which it would install dpkg-dev, and
        # the image has no archive to install from (the tests depend on nothing)
        (tree / "debian" / "files").write_text("")
        peer = subprocess.run(["autopkgtest", "--summary-file", str(summary), f"{tree}/", "--", "lxd", alias,
                               "--profile", "default", "--profile", alias], capture_output=True, text=True,
                              timeout=900, env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"})
        assert peer.returncode in (0, 4), peer.stdout[-2000:] + peer.stderr[-3000:]  # 4: some failed
    finally:  # (what autopkgtest left when it failed half-way, then the image and the profile)
        for name in {str(i["name"]) for i in lxc_json("list", "local:")} - before:  # type: ignore[union-attr]
            if name.startswith("autopkgtest-lxd-"):
                subprocess.run(["lxc", "delete", "--force", name], capture_output=True, timeout=120)
        subprocess.run(["lxc", "image", "delete", alias], capture_output=True, timeout=120)
        subprocess.run(["lxc", "profile", "delete", alias], capture_output=True, timeout=60)
    return {line.split()[0]: line.split()[1].lower() for line in summary.read_text().splitlines() if line.strip()}
