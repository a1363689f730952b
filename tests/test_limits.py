"""Limits: how tests declare them, which one wins, and verdicts that name the limit that struck."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imageci.definitions.limits import DEFAULTS, LimitPolicy, LimitRule, Limits, parse_assignments
from imageci.definitions.suite import load_suite
from imageci.errors import SourceError, UsageError
from imageci.sizes import parse_size
from imageci.store.models import Version

from conftest import IMAGECI, REPO, Env, write_suite

HOG = '#!/bin/sh\ntest "$(head -c 300000000 /dev/zero | tail -n 1 | wc -c)" = 300000000\n'  # 300 MB in one line


def test_sizes_and_assignments() -> None:
    assert parse_size("4G") == 4 << 30 == parse_size("4GiB") == parse_size("4 gb")
    assert parse_size("512m") == 512 << 20 and parse_size(1024) == 1024
    for bad in ("", "4X", "-1", "0", "G"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_assignments(["memory=4G", "pids=100"]) == Limits(memory=4 << 30, pids=100)
    for bad in (["memory"], ["colour=red"], ["pids=lots"], ["disk=0"]):
        with pytest.raises(UsageError, match="--limit"):
            parse_assignments(bad)


def test_later_layers_win_defaults_rules_the_test_then_the_command_line() -> None:
    policy = LimitPolicy(rules=(LimitRule("*", Limits(memory=1 << 30, disk=1 << 30)),
                                LimitRule("gzip/*", Limits(memory=3 << 30))), override=Limits(pids=99))
    got = policy.for_test("gzip/zgrep", Limits(disk=5 << 30))
    assert got == Limits(memory=3 << 30, pids=99, disk=5 << 30, output=DEFAULTS.output, log=DEFAULTS.log)
    assert policy.for_test("other", Limits()).memory == 1 << 30
    cli = LimitPolicy(rules=policy.rules, override=Limits(memory=8 << 30))
    assert cli.for_test("gzip/zgrep", Limits(memory=2 << 30)).memory == 8 << 30


def test_suite_yaml_headers_and_rules_declare_limits(tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {"a.sh": "#!/bin/sh\n# imageci-memory: 3G\n# imageci-pids: 64\ntrue\n",
                                     "b.sh": "#!/bin/sh\ntrue\n"},
                    "defaults:\n  disk: 4G\ntests:\n  b:\n    output: 10M\nlimits:\n  - test: 'gzip/*'\n"
                    "    memory: 6G\n")
    suite = load_suite(d)
    a, b = suite.tests
    assert a.limits == Limits(memory=3 << 30, pids=64) and b.limits == Limits(output=10 << 20)
    policy = suite.limit_policy()
    assert policy.for_test("a", a.limits).disk == 4 << 30  # defaults: apply to every test of the suite
    assert policy.for_test("gzip/t", Limits()).memory == 6 << 30
    (d / "a.sh").write_text("#!/bin/sh\n# imageci-memory: lots\n")
    with pytest.raises(SourceError) as exc:
        load_suite(d)
    assert exc.value.line == 2 and "imageci-memory" in str(exc.value)
    (d / "a.sh").write_text("#!/bin/sh\n")
    (d / "suite.yaml").write_text("limits:\n  - test: x\n    memory: 1X\n")
    with pytest.raises(SourceError) as exc:
        load_suite(d)
    assert exc.value.line == 3 and "not a size" in str(exc.value)


@pytest.mark.root
def test_a_limit_that_stops_a_test_is_named_and_a_test_can_declare_more(image_env: tuple[Env, Version],
                                                                         tmp_path: Path) -> None:
    e, version = image_env
    tag = os.urandom(3).hex()
    d = write_suite(tmp_path / "s", {f"hog-{tag}.sh": "#!/bin/sh\n# imageci-memory: 64M\n" + HOG.split("\n", 1)[1],
                                     f"forks-{tag}.sh": "#!/bin/sh\n# imageci-pids: 16\n"
                                                        "for i in $(seq 40); do sleep 5 & done; wait\n"},
                    "limits:\n  - test: 'demo/*'\n    memory: 64M\n")
    tree = tmp_path / "demo"
    (tree / "debian" / "tests").mkdir(parents=True)
    (tree / "debian" / "control").write_text("Source: demo\n\nPackage: demo\nArchitecture: all\n")
    (tree / "debian" / "tests" / "control").write_text(
        f"Test-Command: {HOG.splitlines()[1]}\nFeatures: test-name=hog\nDepends:\nRestrictions: allow-stderr\n")
    ref = f"{version.product.name}@{version.serial}"
    res = e.cli("test", ref, "--suite", str(d), "--dep8", str(tree), "--testbed", "sandbox", "--rerun-all")
    assert res.returncode == 1, res.stdout + res.stderr
    recorded = json.loads(e.cli("results", ref, "--json", check=True).stdout)["attempts"]
    attempts = {a["test"]: a for a in recorded if a["run"] == max(x["run"] for x in recorded)}
    assert attempts[f"hog-{tag}"]["verdict"] == "fail"
    assert attempts[f"hog-{tag}"]["reason"].startswith("memory limit (64 MiB) reached"), attempts[f"hog-{tag}"]
    assert attempts["demo/hog"]["reason"].startswith("memory limit (64 MiB) reached")  # suite rule, DEP-8 test
    assert attempts[f"forks-{tag}"]["reason"].startswith("pids limit (16) reached")
    assert "memory limit (64 MiB) reached" in Path(attempts[f"hog-{tag}"]["log"]).read_text()
    more = e.cli("test", ref, "--suite", str(d), "--dep8", str(tree), "--testbed", "sandbox", "--rerun-all",
                 "--limit", "memory=1G", "--limit", "pids=4096")
    assert more.returncode == 0, more.stdout + more.stderr  # the command line wins over the declarations


@pytest.mark.root
def test_200_mb_of_output_costs_constant_memory_and_a_bounded_log(image_env: tuple[Env, Version],
                                                                  tmp_path: Path) -> None:
    e, version = image_env
    name = f"chatty-{os.urandom(3).hex()}"
    d = write_suite(tmp_path / "s", {f"{name}.sh": "#!/bin/sh\nyes 'imageci output line' | head -c 200000000\n"
                                                   "echo the-end\nexit 3\n"})
    res = e.cli("run", f"{version.product.name}@{version.serial}", name, "--suite", str(d), "--testbed", "sandbox",
                "--rerun-all")
    assert res.returncode == 1, res.stdout + res.stderr
    attempt = json.loads(e.cli("results", f"{version.product.name}@{version.serial}", name, "--json",
                               check=True).stdout)["attempts"][-1]
    log = Path(attempt["log"]).read_bytes()
    assert len(log) <= DEFAULTS.log + 4096  # type: ignore[operator]
    assert b"bytes cut here; 200000008 bytes were written in all" in log and b"the-end" in log
    assert attempt["reason"] == "exit 3: the-end"


@pytest.mark.root
def test_imageci_s_own_memory_stays_flat_while_a_test_writes_200_mb(image_env: tuple[Env, Version],
                                                                    tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the sandbox testbed needs root", pytrace=False)
    e, version = image_env

    def peak_kib(script: str) -> int:
        """The peak memory of an `imageci run` of one test (a child of ours only: its rusage is its own)."""
        name = f"t-{os.urandom(3).hex()}"
        d = write_suite(tmp_path / name, {f"{name}.sh": f"#!/bin/sh\n{script}\n"})
        pid = os.fork()
        if pid == 0:
            os.execve(IMAGECI[0], [*IMAGECI, "run", f"{version.product.name}@{version.serial}", name, "--suite",
                                   str(d), "--testbed", "sandbox", "--rerun-all"],
                      {**e.env(), "PYTHONPATH": str(REPO / "src")})
        _, status, usage = os.wait4(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        return usage.ru_maxrss

    quiet = peak_kib("true")  # first: whatever a first run does once (a cache to fill) is counted here
    flood = peak_kib("head -c 200000000 /dev/zero")
    # the same imageci, 200 MB more output: no more than noise (it was 678 MB when output was buffered)
    assert flood - quiet < 40 * 1024, f"imageci grew by {(flood - quiet) // 1024} MB (from {quiet // 1024} MB)"
