"""pytest-testinfra modules run unchanged on any testbed: the host fixture's
commands reach the testbed through imageci's exec bridge, one result per test
function, with pytest's own verdicts."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from imageci.definitions.testinfra import load_testinfra
from imageci.errors import SourceError
from imageci.store.models import Version

from conftest import Env, write_suite

needs_root = pytest.mark.root

MODULE = '''
import pytest


def test_runs_in_the_image_not_on_the_host(host):
    assert host.file("/etc/imageci-release").contains("IMAGE_NAME=debian-bookworm-minimal")
    assert not host.exists("podman")  # the host has podman; the image does not
    assert host.system_info.distribution == "debian"


@pytest.mark.parametrize("name", ["bash", "tzdata", "cowsay"])
def test_package(host, name):
    assert host.package(name).is_installed


def test_leaves_a_mark(host):
    host.run_test("touch /root/mark")


def test_fresh_testbed(host):
    assert not host.file("/root/mark").exists


def test_root_user(host):
    assert host.user().name == "root" and host.user("root").home == "/root"


def test_skips(host):
    pytest.skip("not on this image")


@pytest.fixture
def broken():
    raise RuntimeError("fixture broke")


def test_fixture_error(host, broken):
    pass
'''

EXPECTED = {
    "test_runs_in_the_image_not_on_the_host": "pass",
    "test_package[bash]": "pass",
    "test_package[tzdata]": "pass",
    "test_package[cowsay]": "fail",
    "test_leaves_a_mark": "pass",
    "test_fresh_testbed": "pass",
    "test_root_user": "pass",
    "test_skips": "skip",
    "test_fixture_error": "error",
}


def test_collection_names_each_function_and_parameter(tmp_path: Path) -> None:
    mod = tmp_path / "test_image.py"
    mod.write_text(MODULE)
    assert [t.name for t in load_testinfra(mod)] == list(EXPECTED)


@pytest.mark.parametrize(("body", "line", "needle"), [
    ("def test_x(host):\n    assert (\n", 2, "syntax error"),
    ("import no_such_module_anywhere\n\ndef test_x(host):\n    pass\n", 1, "No module named"),
    ("def helper():\n    pass\n", None, "no test functions"),
])
def test_bad_modules_are_clear_errors(tmp_path: Path, body: str, line: int | None, needle: str) -> None:
    mod = tmp_path / "test_bad.py"
    mod.write_text(body)
    with pytest.raises(SourceError) as err:
        load_testinfra(mod)
    assert err.value.line == line and needle in str(err.value), str(err.value)


@needs_root
def test_same_verdicts_on_every_testbed(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    mod = tmp_path / "test_image.py"
    mod.write_text(MODULE)
    beds = ["sandbox"] + (["podman"] if shutil.which("podman") else [])
    res = e.cli("test", f"{version.product.name}@{version.serial}", "--testinfra", str(mod), "--rerun-all",
                *[a for b in beds for a in ("--testbed", b)], "--tap", str(tmp_path / "r.tap"))
    assert res.returncode == 3, res.stdout + res.stderr  # the fixture error is an error, not a failure
    got: dict[str, dict[str, str]] = {b: {} for b in beds}
    for line in (tmp_path / "r.tap").read_text().splitlines():
        m = re.match(r"(ok|not ok) \d+ - testinfra:test_image/(.*) \[(\S+)\]( # SKIP.*)?$", line)
        if m:
            got[m.group(3)][m.group(2)] = "skip" if m.group(4) else ("pass" if m.group(1) == "ok" else "x")
    attempts = {a.test_id.removeprefix("testinfra:test_image/") + "@" + a.testbed: a
                for a in e.catalog.attempts(version.digest) if a.test_id.startswith("testinfra:")}
    for bed in beds:
        verdicts = {k: (attempts[f"{k}@{bed}"].verdict if v == "x" else v) for k, v in got[bed].items()}
        assert verdicts == EXPECTED, bed
    assert "fixture broke" in attempts["test_fixture_error@sandbox"].reason
    assert "cowsay" in e.store.path(attempts["test_package[cowsay]@sandbox"].log_digest or "").read_text()


@needs_root
def test_suite_yaml_lists_testinfra_modules(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    d = write_suite(tmp_path / "s", {"test_image.py": MODULE}, "testinfra: [test_image.py]\n")
    os.chmod(d / "test_image.py", 0o755)  # even executable, a listed module is not a script test
    ref = f"{version.product.name}@{version.serial}"
    res = e.cli("run", ref, "testinfra:test_image/test_package[bash]", "--suite", str(d), "--testbed", "sandbox")
    assert res.returncode == 0 and "1 pass" in res.stdout, res.stdout + res.stderr
    (d / "suite.yaml").write_text("testinfra:\n  - test_gone.py\n")
    bad = e.cli("test", ref, "--suite", str(d))
    assert bad.returncode == 2 and "suite.yaml:2" in bad.stderr and "'test_gone.py' does not exist" in bad.stderr
