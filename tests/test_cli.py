"""The command line end to end, as a user runs it: real build (through the
shared build cache), real sandboxes, documented exit codes and reports."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import xmlschema

from conftest import BUILD_CACHE, EXAMPLE, Env, build_example, make_env, write_suite

pytestmark = pytest.mark.root
SCHEMA = xmlschema.XMLSchema(Path(__file__).parent / "data" / "junit.xsd")
NAME = "debian-bookworm-minimal"


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("cli-home"))
    build_example(e)  # fills the shared cache if needed
    res = e.cli("build", str(EXAMPLE / "image.yaml"))
    assert res.returncode == 0, res.stderr
    yield e
    e.catalog.close()


def test_build_skips_when_inputs_unchanged(cli_env: Env) -> None:
    res = cli_env.cli("build", str(EXAMPLE / "image.yaml"))
    assert res.returncode == 0
    assert "unchanged inputs" in res.stdout and "skipping build" in res.stdout
    images = json.loads(cli_env.cli("images", "--json").stdout)
    assert len(images) == 1
    assert images[0]["name"] == NAME and images[0]["state"] == "testing" and images[0]["channels"] == ["testing"]
    assert re.fullmatch(r"\d{8}\.\d{3}", images[0]["version"])


def test_run_one_test_and_unknown_names(cli_env: Env) -> None:
    res = cli_env.cli("run", f"{NAME}:testing", "os-release", "locale")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 pass" in res.stdout
    bad = cli_env.cli("run", f"{NAME}:testing", "os-relase")
    assert bad.returncode == 2 and "did you mean os-release" in bad.stderr
    unknown = cli_env.cli("run", "debian-bookworm-minimul", "os-release")
    assert unknown.returncode == 2 and f"did you mean: {NAME}" in unknown.stderr
    usage = cli_env.cli("run")
    assert usage.returncode == 2


PROBE = ("import sys, runpy\nsys.argv = ['imageci'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('imageci.cli', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
         "print('ORM', 'sqlalchemy' in sys.modules, 'TESTBEDS', 'imageci.testbeds.sandbox' in sys.modules, "
         "'PARSERS', any(m in sys.modules for m in ('debian.deb822', 'imageci.checks.structure', "
         "'imageci.checks.testinfra')), 'METADATA', 'importlib.metadata' in sys.modules, 'EXIT', code, "
         "file=sys.stderr)\n")


def test_a_test_that_passed_on_these_bytes_is_answered_without_running_or_recording(cli_env: Env,
                                                                                    tmp_path: Path) -> None:
    first = subprocess.run([sys.executable, "-c", PROBE, "run", NAME, "os-release", "--rerun-all"],
                           env=cli_env.env(), capture_output=True, text=True, timeout=120)
    # a run of the suite's scripts loads no DEP-8, structure or testinfra parser (app.planning imports them when asked)
    assert "PARSERS False" in first.stderr and "EXIT 0" in first.stderr, first.stdout + first.stderr

    def runs() -> int:
        return len(json.loads(cli_env.cli("results", NAME, "--json").stdout)["runs"])

    before = runs()
    again = subprocess.run([sys.executable, "-c", PROBE, "run", NAME, "os-release"], env=cli_env.env(),
                           capture_output=True, text=True, timeout=120)
    assert "nothing ran: every test passed before on these bytes" in again.stdout, again.stdout + again.stderr
    assert "pass  os-release [sandbox]  (cached: passed before for these bytes, run " in again.stdout
    # the catalog's reader alone; nor importlib.metadata (pydantic's plugin loader would, with plugins off)
    assert "ORM False TESTBEDS False PARSERS False METADATA False EXIT 0" in again.stderr, again.stderr
    assert runs() == before  # nothing recorded
    d = write_suite(tmp_path / "s", {"fails.sh": "#!/bin/sh\nexit 1\n"})
    for _ in range(2):  # a failure is never answered so: it runs, and is recorded, each time
        res = cli_env.cli("run", NAME, "fails", "--suite", str(d))
        assert res.returncode == 1 and "nothing ran" not in res.stdout, res.stdout
    assert runs() == before + 2
    rerun = cli_env.cli("run", NAME, "os-release", "--rerun-all")  # asked to run: it runs
    assert rerun.returncode == 0 and "nothing ran" not in rerun.stdout and runs() == before + 3
    both = cli_env.cli("run", NAME, "os-release", "--testbed", "sandbox", "--testbed", "podman")  # not on podman
    assert "nothing ran" not in both.stdout and runs() == before + 4, both.stdout + both.stderr


def test_failing_suite_reports_and_exit_code(cli_env: Env, tmp_path: Path) -> None:
    junit, tap = tmp_path / "r.xml", tmp_path / "r.tap"
    res = cli_env.cli("test", NAME, "--suite", str(EXAMPLE / "failing-suite"), "--junit", str(junit),
                      "--tap", str(tap), "--retries", "1")
    assert res.returncode == 1, res.stdout + res.stderr
    SCHEMA.validate(str(junit))
    root = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"os-release", "python-present"}
    failure = cases["python-present"].find("failure")
    assert failure is not None and "python3 is not installed" in (failure.get("message") or "")
    assert "python3 is not installed" in (failure.text or "")  # log excerpt
    assert root.get("failures") == "1" and root.get("tests") == "2"
    lines = tap.read_text().splitlines()
    assert lines[:2] == ["TAP version 13", "1..2"]
    assert "ok 1 - os-release [sandbox]" in lines
    assert "not ok 2 - python-present [sandbox]" in lines
    assert "  - fail" in lines  # two attempts listed in the YAML block
    # results: every attempt, with a log that exists
    out = json.loads(cli_env.cli("results", NAME, "python-present", "--json").stdout)
    tries = [a for a in out["attempts"] if a["test"] == "python-present"]
    assert [a["attempt"] for a in tries][-2:] == [1, 2] and {a["verdict"] for a in tries} == {"fail"}
    assert "python3 is not installed" in Path(tries[-1]["log"]).read_text()
    assert cli_env.cli("results", NAME, "ghost").returncode == 2


def test_all_skipped_exit_code(cli_env: Env, tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {"na.sh": "#!/bin/sh\necho not applicable\nexit 77\n"})
    res = cli_env.cli("test", NAME, "--suite", str(d))
    assert res.returncode == 4, res.stdout
    assert "1 skip" in res.stdout


def test_gate_refuses_then_promotes_with_audit(cli_env: Env, tmp_path: Path) -> None:
    # only one of the suite's tests has run on this home: the gate does not hold
    assert cli_env.cli("run", NAME, "os-release").returncode == 0
    refused = cli_env.cli("promote", NAME)
    assert refused.returncode == 5
    assert "never run" in refused.stderr
    no_reason = cli_env.cli("promote", NAME, "--force")
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    fifo = tmp_path / "report.fifo"  # a non-regular report target must be written in place, not replaced
    os.mkfifo(fifo)
    drained: list[bytes] = []
    reader = threading.Thread(target=lambda: drained.append(fifo.read_bytes()))
    reader.start()
    full = cli_env.cli("test", NAME, "--tap", str(fifo))
    reader.join(timeout=60)
    assert fifo.is_fifo() and drained and drained[0].startswith(b"TAP version 13")
    assert full.returncode == 0, full.stdout
    assert "(cached: passed before for these bytes)" in full.stdout  # os-release passed earlier
    ok = cli_env.cli("promote", NAME, "--to", "stable")
    assert ok.returncode == 0, ok.stderr
    events = cli_env.cli("events", f"{NAME}:stable")
    assert "gate held" in events.stdout and "stable" in events.stdout
    assert cli_env.cli("promote", f"{NAME}:stable").returncode == 2  # already stable


def test_pipeline_with_failing_gate_stays_in_testing(tmp_path: Path) -> None:
    e = make_env(tmp_path / "home")
    shutil.copytree(EXAMPLE / "failing-suite", tmp_path / "failing-suite")
    text = (EXAMPLE / "image.yaml").read_text().replace("suite: suite", "suite: failing-suite")
    (tmp_path / "image.yaml").write_text(text)
    res = e.cli("pipeline", str(tmp_path / "image.yaml"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "not promoted" in res.stderr and "python-present on sandbox" in res.stderr
    images = json.loads(e.cli("images", "--json").stdout)
    assert [i["state"] for i in images] == ["testing"]
    assert BUILD_CACHE.exists()
    e.catalog.close()


def test_ctrl_c_during_tests_cleans_up_and_keeps_reports(cli_env: Env, tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from imageci.fs import mounts_below

    from conftest import IMAGECI, REPO

    marker = f"hang{os.getpid()}x"
    d = write_suite(tmp_path / "s", {
        "quick.sh": f"#!/bin/sh\n# {marker}\ntrue\n",
        "hang.sh": f"#!/bin/sh\ncp /bin/sleep /tmp/{marker}\n/tmp/{marker} 120\n",
    })
    junit = tmp_path / "partial.xml"
    proc = subprocess.Popen([*IMAGECI, "test", NAME, "--suite", str(d), "-j", "2", "--junit", str(junit)],
                            env=cli_env.env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and marker not in _cmdlines():
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert marker not in _cmdlines()  # the hanging test's process tree is gone
    sandboxes = cli_env.settings.tmp_dir / "sandboxes"
    assert mounts_below(cli_env.settings.home) == []
    assert not sandboxes.exists() or list(sandboxes.iterdir()) == []
    SCHEMA.validate(str(junit))  # the report of what did run is still written
    hang = json.loads(cli_env.cli("results", NAME, "hang", "--json").stdout)["attempts"]
    assert hang and hang[-1]["verdict"] == "error" and hang[-1]["reason"] == "interrupted"


def _cmdlines() -> str:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                out.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(out)


def test_suite_chooses_default_testbeds_and_tests_can_be_restricted(cli_env: Env, tmp_path: Path) -> None:
    d = write_suite(tmp_path / "s", {
        "everywhere.sh": f"#!/bin/sh\n# {tmp_path.name}\ntrue\n",
        "sandbox-only.sh": f"#!/bin/sh\n# imageci-testbeds: sandbox\n# {tmp_path.name}\ntrue\n",
    }, "testbeds: [sandbox, podman]\n")
    res = cli_env.cli("test", NAME, "--suite", str(d))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "× sandbox, podman" in res.stdout
    assert "sandbox-only [podman] 0.00s — runs only on: sandbox" in res.stdout
    only = cli_env.cli("test", NAME, "--suite", str(d), "--testbed", "sandbox", "--rerun-all")
    assert "× sandbox\n" in only.stdout  # the command line wins over the suite


def test_a_tampered_rootfs_cache_is_never_tested_and_verify_reports_it(tmp_path: Path) -> None:
    e = make_env(tmp_path / "home")
    version = build_example(e)
    d = write_suite(tmp_path / "s", {"stamp.sh": "#!/bin/sh\ngrep -q IMAGE_NAME= /etc/imageci-release\n"})
    ref = f"{version.product.name}@{version.serial}"
    assert e.cli("run", ref, "stamp", "--suite", str(d)).returncode == 0
    tree = e.settings.rootfs_cache / version.digest
    (tree / "etc" / "imageci-release").write_text("tampered\n")
    again = e.cli("run", ref, "stamp", "--suite", str(d), "--rerun-all")
    assert again.returncode == 0, again.stdout + again.stderr  # the test saw the image's bytes, not the edit
    assert "was modified" in again.stderr and "unpacking it again" in again.stderr
    assert (tree / "etc" / "imageci-release").read_text() != "tampered\n"
    (tree / "etc" / "imageci-release").write_text("tampered again\n")
    res = e.cli("verify")
    assert res.returncode == 7 and "etc/imageci-release: content changed" in res.stderr, res.stdout + res.stderr
    assert not tree.exists()  # discarded: the next run unpacks the blob again
    assert e.cli("verify").returncode == 0
    e.catalog.close()
