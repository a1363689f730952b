"""The ssh testbed against a real sshd that the test starts on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageci.checks.script import ScriptCheck
from imageci.definitions.suite import load_suite
from imageci.engine.runner import Engine
from imageci.errors import SourceError, TestbedError, UsageError
from imageci.store.models import Version
from imageci.testbeds.registry import make_backend
from imageci.testbeds.ssh import HostConfig, SshTestbed, load_host
from imageci.verdicts import Verdict

from conftest import Env, require_tool, write_suite

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture(autouse=True, scope="module")
def _sshd() -> None:
    require_tool(os.path.exists(SSHD), "openssh-server (sshd)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostConfig]:
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey \"{d / 'host_key'}\"\nPidFile \"{d / 'sshd.pid'}\"\n"
        f"AuthorizedKeysFile \"{d / 'authorized_keys'}\"\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
    yield HostConfig(host="127.0.0.1", port=port, user="root", key=str(d / "client_key"),
                     capabilities=["root", "arch:amd64"], known_hosts=str(d / "known_hosts"))
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def bed(sshd: HostConfig, tmp_path: Path) -> Iterator[SshTestbed]:
    tb = SshTestbed("ssh:local", sshd, tmp_path / "known_hosts")
    tb.open()
    yield tb
    tb.close()


@pytest.mark.root
def test_exec_streams_exit_codes_env_and_cwd(bed: SshTestbed) -> None:
    r = bed.exec(["sh", "-c", 'echo "out $FOO $(pwd)"; echo err >&2; exit 4'], env={"FOO": "a b"}, cwd="/tmp")
    assert (r.exit_code, r.stdout, r.stderr) == (4, b"out a b /tmp\n", b"err\n")
    assert bed.exec(["cat"], stdin=b"piped").stdout == b"piped"
    assert bed.exec(["printf", "%s|", "it's", "$HOME", "a;b"]).stdout == b"it's|$HOME|a;b|"  # argv is quoted


@pytest.mark.root
def test_copy_roundtrip_and_cleanup(bed: SshTestbed, tmp_path: Path) -> None:
    src = tmp_path / "script.sh"
    src.write_text("#!/bin/sh\necho copied\n")
    src.chmod(0o755)
    dest = f"/tmp/imageci-ssh-{uuid.uuid4().hex[:8]}/t/script.sh"
    bed.copy_in(src, dest)
    assert bed.exec([dest]).stdout == b"copied\n"
    odd = tmp_path / "odd"
    odd.write_text("x")
    odd.chmod(0o640)
    bed.copy_in(odd, f"{dest}.mode")  # a file keeps its mode (the host is this machine)
    assert stat.S_IMODE(os.stat(f"{dest}.mode").st_mode) == 0o640 and Path(f"{dest}.mode").read_text() == "x"
    with pytest.raises(TestbedError, match="t"):  # a directory stands there: an error, the directory kept
        bed.copy_in(odd, str(Path(dest).parent))
    assert Path(dest).is_file()
    bed.exec(["sh", "-c", f"echo result > {dest}.out"])
    bed.copy_out(f"{dest}.out", tmp_path / "out")
    assert (tmp_path / "out").read_text() == "result\n"
    bed.close()
    assert not Path(dest).exists()  # copied files are removed on close (the host is this machine)
    assert not Path(dest).parent.parent.exists()  # and the directories made for them


@pytest.mark.root
def test_timeout_kills_the_remote_process_group(bed: SshTestbed) -> None:
    marker = f"sshmark{uuid.uuid4().hex[:6]}"
    r = bed.exec(["sh", "-c", f"cp /bin/sleep /tmp/{marker}; /tmp/{marker} 300 & /tmp/{marker} 301; wait"],
                 timeout=2)
    assert r.timed_out and r.exit_code is None
    time.sleep(0.3)
    alive = subprocess.run(["pgrep", "-f", f"/tmp/{marker}"], capture_output=True, text=True).stdout.split()
    assert alive == []
    os.unlink(f"/tmp/{marker}")


def test_unreachable_host_is_a_testbed_error(tmp_path: Path) -> None:
    cfg = HostConfig(host="127.0.0.1", port=_free_port(), connect_timeout=3)
    with pytest.raises(TestbedError, match="cannot reach"):
        SshTestbed("ssh:gone", cfg, tmp_path / "kh").open()


@pytest.mark.root
def test_revert_is_refused(bed: SshTestbed) -> None:
    assert "revert" not in bed.capabilities()
    with pytest.raises(TestbedError):
        bed.revert()


def test_hosts_file_errors_name_the_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no hosts file"):
        load_host(tmp_path / "hosts.yaml", "x")
    (tmp_path / "hosts.yaml").write_text("hosts:\n  pi:\n    host: 10.0.0.9\n    prot: 22\n")
    with pytest.raises(SourceError) as exc:
        load_host(tmp_path / "hosts.yaml", "pi")
    assert exc.value.line == 4 and "prot" in str(exc.value)


@pytest.mark.root
def test_suite_on_ssh_host_through_the_engine(image_env: tuple[Env, Version], sshd: HostConfig,
                                             tmp_path: Path) -> None:
    e, version = image_env
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(f"hosts:\n  local:\n    host: 127.0.0.1\n    port: {sshd.port}\n    key: {sshd.key}\n"
                     f"    known_hosts: {sshd.known_hosts}\n    capabilities: [root]\n")
    d = write_suite(tmp_path / "suite", {
        "ok.sh": f"#!/bin/sh\n# {tmp_path.name}\ntest \"$IMAGECI_TESTBED\" = ssh:local\n",
        "bad.sh": "#!/bin/sh\nexit 3\n",
        "destructive.sh": "#!/bin/sh\n# imageci-needs: revert\nrm -rf /important\n",
    })
    settings = dataclasses.replace(e.settings, hosts_file=hosts)  # what IMAGECI_HOSTS sets
    engine = Engine(e.catalog, e.store, {"ssh:local": make_backend("ssh:local", settings)}, jobs=2)
    report = engine.run(version, [ScriptCheck(s) for s in load_suite(d).tests], ["ssh:local"])
    got = {r.test_id: (r.verdict, r.reason) for r in report.results}
    assert got["ok"] == (Verdict.PASS, "")
    assert got["bad"][0] == Verdict.FAIL
    assert got["destructive"] == (Verdict.SKIP, "testbed ssh:local lacks: revert")
