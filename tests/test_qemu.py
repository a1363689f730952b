"""The qemu testbed: real VMs booted from the VM example image (TCG here,
KVM only where a real boot proves it works)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from imageci.app.holds import Holding
from imageci.app.session import Session
from imageci.app.shells import shell
from imageci.checks import complaints
from imageci.checks.base import Check
from imageci.checks.builtin import BuiltinCheck
from imageci.checks.dep8 import dep8_checks
from imageci.checks.depcache import DependencyCache
from imageci.checks.script import ScriptCheck
from imageci.checks.testinfra import checks_from_testinfra
from imageci.definitions.dep8 import load_dep8
from imageci.definitions.suite import load_suite
from imageci.engine.results import RunReport
from imageci.engine.runner import Engine
from imageci.store.models import Version
from imageci.testbeds.vm.accel import qemu_binary as find_qemu
from imageci.testbeds.vm.qemu import QemuBackend
from imageci.verdicts import Verdict

from conftest import REPO, UNIT_FAILS, Env, build_example, dep8_tree, require_tool, write_suite
from test_holds import on_a_terminal

VM_DEF = REPO / "examples" / "debian-bookworm-vm" / "image.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.root]  # reads the whole rootfs to make a disk


@pytest.fixture(autouse=True, scope="module")
def _qemu() -> None:
    require_tool(find_qemu() is not None, "qemu")


@pytest.fixture(scope="module")
def vm(image_env: tuple[Env, Version]) -> tuple[Env, Version]:
    e, _ = image_env
    return e, build_example(e, VM_DEF)


@pytest.fixture(scope="module")
def qemu(vm: tuple[Env, Version]) -> Iterator[QemuBackend]:
    e, _ = vm
    backend = QemuBackend(e.home, e.settings.rootfs_cache, keep_warm=True)
    yield backend
    backend.shutdown()
    assert not list((e.home / "tmp" / "vms").glob("run-*"))  # templates, warm VMs and keys removed
    assert not _qemu_processes(e.home)


def _qemu_processes(home: Path) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmd and str(home) in cmd:
                found.append(p.name)
    return found


def _deps(e: Env) -> DependencyCache:
    """The home's cache of test dependencies, as `imageci test` uses it: a VM's `apt-get update` (half a
    CPU-minute under TCG) is made once, and later VMs of the image are handed its package lists."""
    return DependencyCache(e.home / "cache" / "test-deps")


def _run(e: Env, backend: QemuBackend, version: Version, suite: Path, jobs: int = 2,
         extra: list[Check] | None = None) -> RunReport:
    engine = Engine(e.catalog, e.store, {"qemu": backend}, jobs=jobs)
    checks: list[Check] = [ScriptCheck(s) for s in load_suite(suite).tests]
    return engine.run(version, checks + (extra or []), ["qemu"], rerun_all=True)


def _got(report: RunReport) -> dict[str, tuple[Verdict, str]]:
    return {r.test_id: (r.verdict, r.reason) for r in report.results}


def test_boot_once_then_a_fresh_vm_per_test(vm: tuple[Env, Version], qemu: QemuBackend, tmp_path: Path) -> None:
    e, version = vm
    d = write_suite(tmp_path / "s", {
        "a-dirty.sh": "#!/bin/sh\ntouch /root/dirty\n",
        "b-clean.sh": "#!/bin/sh\ntest ! -e /root/dirty || { echo 'saw the other test' >&2; exit 1; }\n",
        "c-booted.sh": "#!/bin/sh\n# imageci-needs: isolation-machine\n"
                       "test \"$(systemctl is-system-running)\" = running && test \"$(id -u)\" = 0\n",
        "d-fills-disk.sh": "#!/bin/sh\nfallocate -l $(( $(stat -f -c '%a*%S' /) - 262144 )) /var/tmp/big\n"
                           "dd if=/dev/zero of=/var/tmp/more bs=1M count=8\n",
        "e-localhost.sh": "#!/bin/sh\ngetent hosts localhost && grep -qx \"$(hostname)\" /etc/hostname\n",
        # the machine's own complaints, each in its own test's window (checks.complaints)
        "f-warns.sh": "#!/bin/sh\necho '<4>imageci: a warning from a test' > /dev/kmsg\n",
        "g-unit-fails.sh": UNIT_FAILS,
        "h-crash.sh": "#!/bin/sh\nulimit -c unlimited\ncd /var/tmp\nsh -c 'kill -SEGV $$'\nexit 0\n",
    })
    for name in ("systemd-running.sh", "service-starts.sh"):
        (d / name).write_bytes((VM_DEF.parent / "suite" / name).read_bytes())
        (d / name).chmod(0o755)
    builtins = [BuiltinCheck("boot-multi-user"), BuiltinCheck("no-failed-units"), BuiltinCheck("console-clean"),
                BuiltinCheck("login-works"), BuiltinCheck("no-ssh-host-keys")]
    module = tmp_path / "test_vm.py"  # a testinfra module: its host fixture reaches the VM over SSH
    module.write_text("def test_sshd(host):\n    ssh = host.service('ssh')\n"
                      "    assert ssh.is_running and ssh.is_enabled\n"
                      "    assert host.file('/proc/1/comm').content_string.strip() == 'systemd'\n")
    tree = tmp_path / "src"  # a DEP-8 test uses the image's apt archive, as an ordinary user
    (tree / "debian" / "tests").mkdir(parents=True)
    (tree / "debian" / "control").write_text("Source: archive-probe\n\nPackage: archive-probe\nArchitecture: all\n")
    (tree / "debian" / "tests" / "control").write_text(
        "Test-Command: cd \"$AUTOPKGTEST_TMP\" && apt-get download -q hello && ls hello_*.deb && test $(id -u) != 0\n"
        "Features: test-name=download\nDepends:\nRestrictions: allow-stderr\n")
    dep8 = dep8_checks(load_dep8(tree), _deps(e))
    report = _run(e, qemu, version, d, jobs=1, extra=[*builtins, *checks_from_testinfra(module), *dep8])
    assert _got(report)["d-fills-disk"][1].startswith("disk limit (2 GiB) reached"), _got(report)
    assert _got(report)["archive-probe/download"] == (Verdict.PASS, "")
    found = {r.test_id: complaints.decoded(r.attempts[-1].findings) for r in report.results}
    assert ("oops", "kernel: imageci: a warning from a test") in {(f.kind, f.text) for f in found["f-warns"]}
    assert "imageci-fails.service failed" in {f.text.split(":")[0] for f in found["g-unit-fails"]
                                              if f.kind == "failed-unit"}, found
    assert [f.text for f in found["h-crash"] if f.kind == "coredump"] == ["core dump: /var/tmp/core"], found
    assert not [(t, f) for t, fs in found.items() for f in fs if t not in ("f-warns", "g-unit-fails", "h-crash")
                and ("imageci" in f.text or f.kind == "coredump")], found  # nobody else's window
    assert {k: v[0] for k, v in _got(report).items() if k not in ("d-fills-disk", "archive-probe/download")} == {
        "f-warns": Verdict.PASS, "g-unit-fails": Verdict.PASS, "h-crash": Verdict.PASS,
        "a-dirty": Verdict.PASS, "b-clean": Verdict.PASS, "c-booted": Verdict.PASS, "e-localhost": Verdict.PASS,
        "systemd-running": Verdict.PASS, "service-starts": Verdict.PASS, "boot-multi-user": Verdict.PASS,
        "no-failed-units": Verdict.PASS, "console-clean": Verdict.PASS, "login-works": Verdict.PASS,
        "no-ssh-host-keys": Verdict.SKIP, "testinfra:test_vm/test_sshd": Verdict.PASS}, _got(report)
    assert "lacks: pristine" in _got(report)["no-ssh-host-keys"][1]  # a booted VM made its host keys
    assert qemu.cold_boots == 1  # thirteen fresh VMs, one boot: the rest were snapshot restores
    assert qemu.warm_made >= 1  # restores made ahead of the tests that took them
    assert "isolation-machine" in qemu.capabilities(Engine(e.catalog, e.store, {}).image_handle(version))


def test_a_new_process_restores_the_template_an_earlier_one_kept(vm: tuple[Env, Version], qemu: QemuBackend,
                                                                 tmp_path: Path) -> None:
    """The second `imageci run` of an image boots nothing: it restores the template the first one kept in the home
    (the same directory, not one made again), with the key its guest was booted with. And a run of one test
    restores no VM ahead of time for a second test that will not come."""
    e, version = vm
    handle = Engine(e.catalog, e.store, {}).image_handle(version)
    saved = qemu.pool.template(handle).state.stat().st_size // 1024  # (made already when run in order)
    # the guest reports the memory it does not use (a balloon with free page reporting): the template's saved
    # state holds little more than what the guest used (without it: 190 MB more here, the boot's freed pages)
    reported = ("#!/bin/sh\nls /sys/bus/virtio/drivers/virtio_balloon | grep -q '^virtio' || "
                "{ echo 'no balloon' >&2; exit 1; }\n"
                "used=$(awk '/^MemTotal:/ {t = $2} /^MemFree:/ {f = $2} END {print t - f}' /proc/meminfo)\n"
                f"test $(( {saved} - used )) -lt 131072 || "
                f"{{ echo \"saved {saved} kB, used $used kB\" >&2; exit 1; }}\n")
    report = _run(e, qemu, version, write_suite(tmp_path / "s", {"t.sh": reported}))
    assert _got(report) == {"t": (Verdict.PASS, "")} and qemu.pool.warming(handle) == 0, _got(report)
    kept = [p for p in (e.home / "vm-templates").iterdir() if p.is_dir()]
    assert len(kept) == 1 and (kept[0] / "state").is_file() and (kept[0] / "id_ed25519").is_file()
    before, runs = kept[0].stat().st_ino, set((e.home / "tmp" / "vms").glob("run-*"))  # (this module's backend's)
    done = e.cli("run", f"sha256:{version.digest}", "systemd-running", "kernel-present", "--testbed", "qemu",
                 "--rerun-all")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p for p in (e.home / "vm-templates").iterdir() if p.is_dir()] == kept
    assert kept[0].stat().st_ino == before  # found and restored, not booted and kept again
    assert set((e.home / "tmp" / "vms").glob("run-*")) == runs  # the process's own directory went with it


def test_a_failing_test_s_vm_is_held_entered_and_released_and_a_shell_gets_a_fresh_one(
        vm: tuple[Env, Version], qemu: QemuBackend, tmp_path: Path) -> None:
    """--hold-on-failure on qemu (the app's Holding on this module's warm backend): the failing test's VM is
    entered by the printed command, with and without a terminal, then released; `imageci shell` in a fresh VM."""
    e, version = vm
    session = Session.open(e.settings)
    holding = Holding(session, timedelta(minutes=10))
    engine = Engine(e.catalog, e.store, {"qemu": qemu}, jobs=1, hold=holding.take)
    d = write_suite(tmp_path / "s", {"fails.sh": "#!/bin/sh\necho 'what the test saw' > /root/evidence\nexit 1\n"})
    report = engine.run(version, [ScriptCheck(s) for s in load_suite(d).tests], ["qemu"], rerun_all=True)
    [row] = holding.detach(report.run_id, engine.backends)
    assert (row.test, row.testbed, row.command) == ("fails", "qemu", f"imageci attach {row.id}")
    entered = e.cli("attach", str(row.id), "--", "sh", "-c", "cat /root/evidence; exit 5")
    assert entered.returncode == 5 and entered.stdout == "what the test saw\n", entered
    code, shown = on_a_terminal(e, "attach", str(row.id), typed=b"test -t 0 && echo on-a-tty-$((6*7)); exit 3\n")
    assert code == 3 and b"on-a-tty-42" in shown, shown
    assert e.cli("release", str(row.id)).returncode == 0 and json.loads(e.cli("held", "--json").stdout) == []
    out = tmp_path / "out"
    with open(out, "wb") as fh, open(os.devnull, "rb") as nothing:
        code = shell(session, f"{version.product.name}@{version.serial}",
                     lambda run: run(False, (nothing.fileno(), fh.fileno(), fh.fileno())), testbed="qemu",
                     argv=["sh", "-c", "test ! -e /root/evidence && systemctl is-system-running; exit 4"], backend=qemu)
    assert code == 4 and out.read_text() == "running\n"


def test_a_test_that_powers_off_the_vm(vm: tuple[Env, Version], qemu: QemuBackend, tmp_path: Path) -> None:
    e, version = vm
    d = write_suite(tmp_path / "s", {
        "a-poweroff.sh": "#!/bin/sh\nsystemctl poweroff --force --force\nsleep 60\n",
        "a-kills-sshd.sh": "#!/bin/sh\nsystemctl mask --now ssh.service ssh.socket >/dev/null 2>&1\n"
                           "pkill -KILL sshd\nsleep 60\n",
        "b-after.sh": f"#!/bin/sh\n# {tmp_path.name}\ntrue\n",
    })
    got = _got(_run(e, qemu, version, d, jobs=1))
    assert got["a-poweroff"][0] == Verdict.ERROR and "lost the VM" in got["a-poweroff"][1]
    assert got["a-kills-sshd"][0] == Verdict.ERROR and "SSH connection dropped" in got["a-kills-sshd"][1]
    assert got["b-after"] == (Verdict.PASS, "")  # the next test got a fresh VM


def test_image_without_kernel_is_skipped(image_env: tuple[Env, Version], qemu: QemuBackend, tmp_path: Path) -> None:
    e, minimal = image_env
    d = write_suite(tmp_path / "s", {"t.sh": "#!/bin/sh\ntrue\n"})
    got = _got(_run(e, qemu, minimal, d))
    assert got["t"][0] == Verdict.SKIP and "no kernel" in got["t"][1]


def test_vm_that_never_becomes_ready_is_an_error_with_its_console(vm: tuple[Env, Version], tmp_path: Path) -> None:
    """Deterministic: the guest's sshd is masked, so it can never become ready however fast or
    loaded the host is; the timeout only bounds the wait (long enough for the kernel to print)."""
    e, version = vm
    never = QemuBackend(e.home, e.settings.rootfs_cache, boot_timeout=30, snapshot=False, accel="tcg",
                        kernel_args="systemd.mask=ssh.service systemd.mask=ssh.socket")
    d = write_suite(tmp_path / "s", {"t.sh": "#!/bin/sh\ntrue\n"})
    started = time.monotonic()
    report = _run(e, never, version, d)
    assert time.monotonic() - started < 240  # an error, not a hang
    result = report.results[0]
    assert result.verdict == Verdict.ERROR and "did not answer on SSH within 30s" in result.reason
    log = e.store.read_bytes(result.attempts[0].log_digest)  # type: ignore[arg-type]
    assert b"--- console" in log
    assert re.search(rb"\[\s*\d+\.\d+\] ", log)  # the kernel had started printing: its log is kept


# autopkgtest-reboot: the test asks for a reboot with a mark, and runs again after it with the mark set
REBOOTS = """case "${AUTOPKGTEST_REBOOT_MARK:-}" in
  "") cat /proc/sys/kernel/random/boot_id > /var/tmp/boot-1; echo first; /tmp/autopkgtest-reboot one; echo unreached ;;
  one) test "$(cat /var/tmp/boot-1)" != "$(cat /proc/sys/kernel/random/boot_id)"; echo "after one" ;;
  *) echo "unexpected mark $AUTOPKGTEST_REBOOT_MARK" >&2; exit 1 ;;
esac"""


def test_auto_puts_each_dep8_test_on_the_lightest_testbed_that_can_run_it(vm: tuple[Env, Version],
                                                                          qemu: QemuBackend, tmp_path: Path) -> None:
    """`--testbed auto`: a plain test in the sandbox, an isolation-container one in a container with an init
    (podman's systemd mode), isolation-machine and needs-reboot ones in a VM — what autopkgtest's unshare backend
    would skip all runs."""
    from imageci.testbeds.registry import make_backend

    e, version = vm
    tree = dep8_tree(tmp_path / "src", "placement", {
        "plain": ("", "test -d /usr"),
        "in-a-container": ("isolation-container, needs-root", 'test "$(cat /proc/1/comm)" = systemd'),
        "on-a-machine": ("isolation-machine, needs-root", "grep -q root=/dev/vda /proc/cmdline"),
        "reboots": ("needs-reboot, needs-root", REBOOTS),
    })
    checks: list[Check] = list(dep8_checks(load_dep8(tree), _deps(e)))  # the lists the first VM's update kept
    backends = {name: make_backend(name, e.settings) for name in ("sandbox", "podman", "lxd")}
    engine = Engine(e.catalog, e.store, {**backends, "qemu": qemu}, jobs=2)
    image = engine.image_handle(version)
    placed = {i.result.check.id: i.result.testbed for i in engine.plan(image, checks, ["auto"], rerun_all=True).items}
    assert placed == {"placement/plain": "sandbox", "placement/in-a-container": "podman",
                      "placement/on-a-machine": "qemu", "placement/reboots": "qemu"}, placed
    report = engine.run(version, checks, ["auto"], rerun_all=True)
    assert {(r.test_id, r.testbed, r.verdict) for r in report.results} == {
        ("placement/plain", "sandbox", Verdict.PASS), ("placement/in-a-container", "podman", Verdict.PASS),
        ("placement/on-a-machine", "qemu", Verdict.PASS), ("placement/reboots", "qemu", Verdict.PASS)}, _got(report)
    reboots = next(r for r in report.results if r.test_id == "placement/reboots")  # rebooted once, marked, resumed
    log = e.store.read_bytes(reboots.attempts[-1].log_digest)  # type: ignore[arg-type]
    assert b"first" in log and b"after one" in log and b"unreached" not in log, log[-2000:]
