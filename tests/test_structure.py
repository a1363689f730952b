"""container-structure-test files: parsed with file:line errors, run on any
testbed with the same verdicts, and compared against the real
container-structure-test binary (tar driver) on the same image."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from imageci.checks.structure import go_mode_string
from imageci.definitions.structure import go_regex, load_structure
from imageci.errors import SourceError
from imageci.store.models import Version

from conftest import REPO, Env, require_tool, write_suite

sys.path.insert(0, str(REPO / "bench"))
import structure_vs_cst as structure_bench  # noqa: E402

needs_root = pytest.mark.root

CONFIG = """schemaVersion: "2.0.0"
globalEnvVars:
  - key: GREETING
    value: hello
commandTests:
  - name: env and exit code
    command: sh
    args: ["-c", "printenv GREETING WHO | paste -sd' '; echo warn >&2; exit 3"]
    envVars:
      - key: WHO
        value: imageci
    expectedOutput: ['^hello imageci\\n$']
    expectedError: ["^warn"]
    excludedOutput: ["goodbye"]
    exitCode: 3
  - name: setup runs first, in the same testbed
    setup: [["sh", "-c", "echo prepared > /tmp/state"]]
    command: cat
    args: ["/tmp/state"]
    teardown: [["rm", "/tmp/state"]]
    expectedOutput: ["prepared"]
  - name: path from the image env
    command: sh
    args: ["-c", "echo $PATH"]
    expectedOutput: ["^/usr/local/sbin:"]
  - name: wrong exit code
    command: "false"
  - name: excluded output present
    command: cat
    args: ["/etc/os-release"]
    excludedOutput: ["bookworm"]
fileExistenceTests:
  - name: passwd
    path: /etc/passwd
    permissions: "-rw-r--r--"
    uid: 0
    gid: 0
  - name: su is setuid
    path: /usr/bin/su
    permissions: "urwxr-xr-x"
    isExecutableBy: other
  - name: tmp is sticky
    path: /tmp
    permissions: "dtrwxrwxrwx"
  - name: sh is a symlink
    path: /bin/sh
    permissions: "Lrwxrwxrwx"
  - name: no docker
    path: /usr/bin/dockerd
    shouldExist: false
  - name: passwd not executable
    path: /etc/passwd
    isExecutableBy: any
  - name: missing
    path: /etc/imageci-nope
  - name: wrong owner
    path: /etc/passwd
    uid: 1000
fileContentTests:
  - name: codename
    path: /etc/os-release
    expectedContents: ["VERSION_CODENAME=bookworm"]
    excludedContents: ["ubuntu"]
  - name: no such file
    path: /etc/imageci-nope
    expectedContents: ["x"]
  - name: wrong content
    path: /etc/debian_version
    expectedContents: ["^11\\\\."]
metadataTest:
  envVars:
    - key: PATH
      value: "^/usr/local/sbin:"
      isRegex: true
  labels:
    - key: org.opencontainers.image.title
      value: debian-bookworm-minimal
  cmd: ["/bin/sh"]
  entrypoint: []
licenseTests:
  - debian: true
"""

EXPECTED = {
    "cst:command/env and exit code": "pass",
    "cst:command/setup runs first, in the same testbed": "pass",
    "cst:command/path from the image env": "pass",
    "cst:command/wrong exit code": "fail",
    "cst:command/excluded output present": "fail",
    "cst:existence/passwd": "pass",
    "cst:existence/su is setuid": "pass",
    "cst:existence/tmp is sticky": "pass",
    "cst:existence/sh is a symlink": "pass",
    "cst:existence/no docker": "pass",
    "cst:existence/passwd not executable": "fail",
    "cst:existence/missing": "fail",
    "cst:existence/wrong owner": "fail",
    "cst:content/codename": "pass",
    "cst:content/no such file": "fail",
    "cst:content/wrong content": "fail",
    "cst:metadata": "pass",
    "cst:license/1": "pass",
}


def test_go_regex_semantics() -> None:
    assert go_regex("a$") == "a\\Z" and go_regex("[$]x") == "[$]x" and go_regex("\\$") == "\\$"
    assert go_regex("x\\z") == "x\\Z" and go_regex("(?m)^a$") == "(?m)^a$"


def test_go_mode_strings() -> None:
    assert go_mode_string(stat.S_IFREG | 0o644) == "-rw-r--r--"
    assert go_mode_string(stat.S_IFREG | 0o4755) == "urwxr-xr-x"
    assert go_mode_string(stat.S_IFREG | 0o2755) == "grwxr-xr-x"
    assert go_mode_string(stat.S_IFDIR | 0o1777) == "dtrwxrwxrwx"
    assert go_mode_string(stat.S_IFLNK | 0o777) == "Lrwxrwxrwx"
    assert go_mode_string(stat.S_IFCHR | 0o666) == "Dcrw-rw-rw-"
    assert go_mode_string(stat.S_IFIFO | 0o600) == "prw-------"


@pytest.mark.parametrize(("text", "line", "needle"), [
    ("fileExistenceTests:\n  - name: a\n    path: /a\n", 1, "schemaVersion: required field missing"),
    ("schemaVersion: 1.0.0\n", 1, "not supported"),
    ("schemaVersion: 2.0.0\nfileExistenceTests:\n  - name: a\n    path: /a\n    shoudExist: true\n", 5,
     "unknown field"),
    ("schemaVersion: 2.0.0\ncommandTests:\n  - name: a\n    command: x\n    expectedOutput: ['(']\n", 5,
     "bad regular expression"),
    ("schemaVersion: 2.0.0\nfileContentTests:\n  - name: a\n    path: /a\n  - name: a\n    path: /b\n", 5,
     "duplicate fileContentTests name 'a' (first on line 3)"),
    ("schemaVersion: 2.0.0\ncontainerRunOptions:\n  privileged: true\n", 2, "docker-driver flags"),
    ("schemaVersion: 2.0.0\nfileExistenceTests:\n  - name: a\n    path: /a\n    isExecutableBy: everyone\n", 5,
     "isExecutableBy"),
    ("schemaVersion: 2.0.0\ncommandTests:\n  - name: a\n    command: x\n    setup: [[]]\n", 3, "must not be empty"),
    ("schemaVersion: 2.0.0\ncommandTests:\n  - name: a\n", 3, "command: required field missing"),
    ("schemaVersion: 2.0.0\nmetadataTest:\n  labels:\n    - key: a\n      value: '['\n      isRegex: true\n", 4,
     "bad regular expression"),
])
def test_bad_structure_files_name_the_line(tmp_path: Path, text: str, line: int, needle: str) -> None:
    p = tmp_path / "cst.yaml"
    p.write_text(text)
    with pytest.raises(SourceError) as err:
        load_structure(p)
    assert err.value.line == line and needle in str(err.value), str(err.value)


def _verdicts(tap: str) -> dict[str, str]:
    out = {}
    for line in tap.splitlines():
        m = re.match(r"(ok|not ok) \d+ - (.*) \[(\S+)\]( # SKIP.*)?$", line)
        if m:
            out[f"{m.group(2)}@{m.group(3)}"] = "skip" if m.group(4) else ("pass" if m.group(1) == "ok" else "fail")
    return out


@needs_root
def test_structure_tests_give_the_same_verdicts_on_every_testbed(image_env: tuple[Env, Version],
                                                                   tmp_path: Path) -> None:
    e, version = image_env
    cfg = tmp_path / "cst.yaml"
    cfg.write_text(CONFIG)
    beds = ["sandbox"] + (["podman"] if shutil.which("podman") else [])
    res = e.cli("test", f"{version.product.name}@{version.serial}", "--structure", str(cfg), "--rerun-all",
                *[a for b in beds for a in ("--testbed", b)], "--tap", str(tmp_path / "r.tap"))
    assert res.returncode == 1, res.stdout + res.stderr
    got = _verdicts((tmp_path / "r.tap").read_text())
    for bed in beds:
        assert {k.rsplit("@", 1)[0]: v for k, v in got.items() if k.endswith(f"@{bed}")} == EXPECTED, bed
    assert "exit code 1, expected 0" in res.stdout
    assert "/etc/passwd is owned by uid 0, expected 1000" in res.stdout
    assert "excluded output 'bookworm' found" in res.stdout


@needs_root
def test_suite_yaml_brings_structure_files_into_the_suite(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "s", {"ok.sh": "#!/bin/sh\ntrue\n"}, "structure: [image.cst.yaml]\n")
    (d / "image.cst.yaml").write_text(CONFIG)
    ref = f"{version.product.name}@{version.serial}"
    res = e.cli("run", ref, "cst:existence/passwd", "ok", "--suite", str(d), "--testbed", "sandbox")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 pass" in res.stdout and "image.cst" not in res.stdout  # the YAML is not a script test
    (d / "suite.yaml").write_text("description: x\nstructure:\n  - gone.yaml\n")
    bad = e.cli("test", ref, "--suite", str(d))
    assert bad.returncode == 2 and "suite.yaml:3" in bad.stderr and "'gone.yaml' does not exist" in bad.stderr


@needs_root
def test_verdict_parity_with_container_structure_test() -> None:
    """The real container-structure-test (tar driver: files, metadata, licenses) and imageci agree: the
    benchmark itself, in its quick mode (so it is also the benchmark's run in CI)."""
    require_tool(bool(structure_bench.peer_binary()), "container-structure-test (make venv)")
    require_tool(shutil.which("skopeo") is not None, "skopeo")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "structure_vs_cst.py"), "--quick"],
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    verdicts = json.loads(next(line for line in lines if line.startswith("verdicts: ")).removeprefix("verdicts: "))
    ours, theirs = verdicts["imageci"], verdicts["container-structure-test"]
    assert ours == theirs
    assert len(theirs) == 18 and list(theirs.values()).count("fail") == 6  # both sides saw failures
    assert lines[-1].startswith("structure: ") and lines[-1].endswith("verdicts identical: True")
