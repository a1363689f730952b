"""DEP-8 control files and autopkgtest's verdict rules, on the real sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from imageci.checks.dep8 import Dep8Check, dep8_checks, dependency_names
from imageci.checks.depcache import DependencyCache
from imageci.definitions.dep8 import load_dep8
from imageci.definitions.limits import DEFAULTS, Limits
from imageci.engine.runner import Engine
from imageci.errors import SourceError
from imageci.store.models import Version
from imageci.testbeds.base import Backend, ImageHandle, Testbed
from imageci.testbeds.registry import make_backend
from imageci.verdicts import Verdict

from conftest import Env

CONTROL = """\
Source: demo
Build-Depends: debhelper-compat (= 13), zlib1g-dev [linux-any] <!nocheck>

Package: demo-bin
Architecture: any

Package: demo-doc
Architecture: all

Package: demo-udeb
Package-Type: udeb
Architecture: any
"""


def make_tree(root: Path, control: str, tests: dict[str, str]) -> Path:
    (root / "debian" / "tests").mkdir(parents=True)
    (root / "debian" / "control").write_text(CONTROL)
    (root / "debian" / "tests" / "control").write_text(control)
    for name, body in tests.items():
        (root / "debian" / "tests" / name).write_text(body)  # deliberately not executable: chmod is ours
    return root


def test_control_file_parsing(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "demo", "# comment\nTests: a b\nDepends: @, gzip | pigz (>= 1)\n"
                     "Restrictions: allow-stderr, needs-root\n\nTest-Command: true\nFeatures: test-name=x\n\n"
                     "Test-Command: false\n", {"a": "", "b": ""})
    suite = load_dep8(tree)
    assert suite.source == "demo" and suite.binaries == ["demo-bin", "demo-doc"]  # no udeb: apt cannot install it
    assert [(t.name, t.path, t.line) for t in suite.tests] == [
        ("a", "debian/tests/a", 2), ("b", "debian/tests/b", 2), ("x", None, 6), ("command1", None, 9)]
    assert suite.tests[0].restrictions == ("allow-stderr", "needs-root")
    assert dependency_names(suite.tests[0].depends, suite) == [["demo-bin"], ["demo-doc"], ["gzip", "pigz"]]
    assert dependency_names("@builddeps@", suite) == [["debhelper-compat"], ["zlib1g-dev"], ["build-essential"]]
    checks = dep8_checks(suite)
    assert checks[0].id == "demo/a" and checks[0].needs == ("archive", "root")  # the apt archive, always
    online = make_tree(tmp_path / "net", "Tests: a\nRestrictions: needs-internet\n", {"a": ""})
    assert dep8_checks(load_dep8(online))[0].needs == ("network",)


@pytest.mark.parametrize(("control", "line", "needle"), [
    ("Tests: a\nDepends gzip\n", 2, "not a 'Field: value' line"),
    ("Tests: a\nTest-Command: true\n", 1, "exactly one of Tests: or Test-Command:"),
    ("Depends: gzip\n", 1, "exactly one of Tests: or Test-Command:"),
    ("Tests: a\nColour: red\n", 2, "unknown field 'colour'"),
    ("Tests: a\nTests: b\n", 2, "appears twice"),
    ("Tests: a\n\nTests: a\n", 3, "declared twice"),
    (" continued\n", 1, "continuation line"),
    ("Tests: a\n\nTests: missing\n", 3, "debian/tests/missing does not exist"),
    ("Tests: a\nFeatures: test-name=x\n", 2, "only allowed with Test-Command"),
    ("Test-Command: true\nFeatures: test-name\n", 2, "needs a value"),
    ("Test-Command: true\nFeatures: test-name=x test-name=y\n", 2, "only one test-name"),
    ("Test-Command: true\nFeatures: test-name=x\n\nTest-Command: false\nFeatures: test-name=x\n", 5,
     "declared twice"),
])
def test_malformed_control_names_file_and_line(tmp_path: Path, control: str, line: int, needle: str) -> None:
    tree = make_tree(tmp_path / "demo", control, {"a": "", "b": ""})
    with pytest.raises(SourceError) as exc:
        load_dep8(tree)
    assert exc.value.line == line and needle in str(exc.value)
    assert str(exc.value).startswith(str(tree / "debian" / "tests" / "control"))


@pytest.mark.root
def test_autopkgtest_verdict_rules(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    e, version = image_env
    tree = make_tree(tmp_path / "demo", (
        "Tests: ok uses-tmp\nDepends: gzip\n\n"
        "Tests: noisy\nDepends: gzip\n\n"
        "Tests: noisy-allowed\nRestrictions: allow-stderr\nDepends: gzip\n\n"
        "Tests: bad\nDepends: gzip\n\n"
        "Tests: skips\nRestrictions: skippable\nDepends: gzip\n\n"
        "Tests: skips-unskippable\nDepends: gzip\n\n"
        "Tests: odd\nRestrictions: needs-a-unicorn\n\n"
        "Tests: vm-only\nRestrictions: isolation-machine\n\n"
        "Test-Command: test \"$(pwd)\" = /var/tmp/imageci/src/demo && test -f debian/control\nDepends: gzip\n\n"
        "Tests: offline-dep\nDepends: imageci-no-such-package\nRestrictions: skip-not-installable\n\n"
        "Tests: broken-dep\nDepends: imageci-no-such-package\n"),
        {"ok": "#!/bin/sh\necho hi | gzip | gunzip\n",
         "uses-tmp": "#!/bin/sh\nset -e\ncd \"$AUTOPKGTEST_TMP\"\ntouch x\ntest -d \"$AUTOPKGTEST_ARTIFACTS\"\n",
         "noisy": "#!/bin/sh\necho warning >&2\n",
         "noisy-allowed": "#!/bin/sh\necho warning >&2\n",
         "bad": "#!/bin/sh\nexit 2\n",
         "skips": "#!/bin/sh\nexit 77\n",
         "skips-unskippable": "#!/bin/sh\nexit 77\n",
         "odd": "#!/bin/sh\ntrue\n", "vm-only": "#!/bin/sh\ntrue\n",
         "offline-dep": "#!/bin/sh\ntrue\n", "broken-dep": "#!/bin/sh\ntrue\n"})
    engine = Engine(e.catalog, e.store, {"sandbox": make_backend("sandbox", e.settings)}, jobs=2)
    report = engine.run(version, list(dep8_checks(load_dep8(tree))), ["sandbox"], rerun_all=True)
    got = {r.test_id.removeprefix("demo/"): (r.verdict, r.reason) for r in report.results}
    assert got["ok"] == (Verdict.PASS, "") and got["uses-tmp"] == (Verdict.PASS, "")
    assert got["noisy"] == (Verdict.FAIL, "stderr: warning")
    assert got["noisy-allowed"] == (Verdict.PASS, "")
    assert got["bad"] == (Verdict.FAIL, "non-zero exit status 2")
    assert got["skips"][0] == Verdict.SKIP
    assert got["skips-unskippable"] == (Verdict.FAIL, "non-zero exit status 77")
    assert got["odd"] == (Verdict.SKIP, "unknown restriction needs-a-unicorn")
    assert got["vm-only"] == (Verdict.SKIP, "testbed sandbox lacks: isolation-machine")
    assert got["command1"] == (Verdict.PASS, "")
    # a dependency apt cannot install: skip with skip-not-installable, otherwise error — never fail
    assert got["offline-dep"][0] == Verdict.SKIP and "not installable" in got["offline-dep"][1]
    assert got["broken-dep"][0] == Verdict.ERROR and "not installable" in got["broken-dep"][1]
    assert isinstance(report.results[0].check, Dep8Check)


@pytest.mark.root
def test_dependency_sets_are_installed_once_per_image(image_env: tuple[Env, Version], tmp_path: Path) -> None:
    """The first test downloads bc from the Debian mirror; the second test and a
    later run install the same set from the cache, without the network."""
    e, version = image_env
    tree = make_tree(tmp_path / "calc", "Tests: add mul\nDepends: bc\n\nTests: plain\nDepends: gzip\n",
                     {"add": "#!/bin/sh\ntest \"$(echo 2+3 | bc)\" = 5\n",
                      "mul": "#!/bin/sh\ntest \"$(echo 6*7 | bc)\" = 42\n", "plain": "#!/bin/sh\ntrue\n"})
    cache = DependencyCache(tmp_path / "deps")
    engine = Engine(e.catalog, e.store, {"sandbox": make_backend("sandbox", e.settings)}, jobs=1)
    report = engine.run(version, list(dep8_checks(load_dep8(tree), cache)), ["sandbox"], rerun_all=True)
    assert {r.test_id: r.verdict for r in report.results} == {
        "demo/add": Verdict.PASS, "demo/mul": Verdict.PASS, "demo/plain": Verdict.PASS}
    entries = [p for p in cache.root.iterdir() if not p.name.startswith((".", "lists-")) and p.name != "layers"]
    assert len(entries) == 1 and (entries[0] / "complete").exists()
    lists = [p for p in cache.root.iterdir() if p.name.startswith("lists-")]  # apt-get update, once
    assert len(lists) == 1 and any(p.name.endswith("_Packages") for p in (lists[0] / "apt").iterdir())
    assert any(p.name.startswith("bc_") for p in (entries[0] / "apt" / "archives").glob("*.deb"))
    logs = {r.test_id: e.store.path(r.attempts[-1].log_digest).read_bytes() for r in report.results
            if r.attempts[-1].log_digest}
    assert b"# installing test dependencies: bc" in logs["demo/add"]
    # same image, same set: the saved install is stacked under the test's writable layer, nothing installed
    assert b"# test dependencies from a saved layer" in logs["demo/mul"]
    layers = list((cache.root / "layers").iterdir())
    assert len(layers) == 1 and (layers[0] / "usr" / "bin" / "bc").is_file()
    assert not (layers[0] / "var" / "tmp" / "imageci" / "apt").exists()  # lists and .debs stay in the .deb cache
    assert b"dependencies" not in logs["demo/plain"]

    # the cache makes the set installable where the network is off
    offline = Engine(e.catalog, e.store, {"sandbox": Offline(make_backend("sandbox", e.settings))}, jobs=1)
    again = offline.run(version, list(dep8_checks(load_dep8(tree), cache))[:1], ["sandbox"], rerun_all=True)
    assert again.results[0].verdict == Verdict.PASS, again.results[0].reason
    uncached = offline.run(version, list(dep8_checks(load_dep8(tree), DependencyCache(tmp_path / "empty")))[:1],
                           ["sandbox"], rerun_all=True)
    assert uncached.results[0].verdict == Verdict.ERROR and "no network" in uncached.results[0].reason




class Offline(Backend):
    """A backend whose testbeds never reach the network or an archive (made without them)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.cost = inner.cost

    def capabilities(self, image: ImageHandle) -> frozenset[str]:
        return self.inner.capabilities(image) - {"network"}

    def create(self, image: ImageHandle, needs: frozenset[str] = frozenset(), limits: Limits = DEFAULTS) -> Testbed:
        bed = self.inner.create(image, needs - {"archive", "network"}, limits)
        assert not {"archive", "network"} & bed.capabilities()
        return bed


def test_auto_skips_what_no_testbed_here_can_run_saying_what_each_lacks(image_env: tuple[Env, Version],
                                                                       tmp_path: Path) -> None:
    """The minimal image has no init and no kernel: `auto` runs a plain test in the sandbox and skips a machine's,
    naming what each testbed of this host lacks for it."""
    e, version = image_env
    tree = make_tree(tmp_path / "demo", "Tests: plain\nDepends:\n\nTests: vm-only\nRestrictions: isolation-machine\n",
                     {"plain": "#!/bin/sh\ntrue\n", "vm-only": "#!/bin/sh\ntrue\n"})
    engine = Engine(e.catalog, e.store, {n: make_backend(n, e.settings) for n in ("sandbox", "podman", "lxd", "qemu")})
    report = engine.run(version, dep8_checks(load_dep8(tree)), ["auto"], rerun_all=True)
    got = {r.test_id: (r.testbed, r.verdict, r.reason) for r in report.results}
    assert got["demo/plain"] == ("sandbox", Verdict.PASS, ""), got
    testbed, verdict, reason = got["demo/vm-only"]
    assert (testbed, verdict) == ("auto", Verdict.SKIP), got
    assert reason.startswith("no testbed of this host can run it ("), reason
    assert "sandbox lacks isolation-machine" in reason and "podman lacks isolation-machine" in reason, reason
    assert "qemu: " in reason and "kernel" in reason, reason  # the minimal image has none to boot
