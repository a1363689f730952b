"""Declared runtimes (.python-version, runtime.txt, engines.node, .tool-versions), an image's runtimes from
its BOM, culprit ranking and the consumers rule: pure logic, no root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageci.definitions.runtimes import RuntimeConstraint, declared_runtimes
from imageci.errors import SourceError
from imageci.policy.consumergate import Side, judge
from imageci.supply.culprits import rank
from imageci.supply.diff import PackageChange
from imageci.supply.packages import Bom, Package
from imageci.supply.runtimes import runtime_of, satisfies, unmet, upstream_version


def _pkg(name: str, version: str, source: str = "") -> Package:
    return Package(type="deb", name=name, version=version, arch="amd64", source=source or name,
                   purl=f"pkg:deb/debian/{name}@{version}?arch=amd64", found_in="var/lib/dpkg/status")


def test_every_runtime_file_is_read_with_its_line(tmp_path: Path) -> None:
    (tmp_path / ".python-version").write_text("# pinned for production\n3.11\n3.12\n")
    (tmp_path / "runtime.txt").write_text("python-3.11.2\n")
    (tmp_path / "package.json").write_text(json.dumps({"name": "x", "engines": {"node": ">=18 <21",
                                                                                "npm": ">=9"}}, indent=2))
    (tmp_path / ".tool-versions").write_text("nodejs 20.11.1\nterraform 1.6.0\nruby system\npython 3.11.2 3.10\n")
    found = declared_runtimes(tmp_path)
    assert [(c.tool, c.spec, c.kind, c.where) for c in found.constraints] == [
        ("python", "3.11", "prefix", ".python-version:2"),
        ("python", "3.11.2", "prefix", "runtime.txt:1"),
        ("node", ">=18 <21", "npm-range", "package.json:4"),
        ("node", "20.11.1", "prefix", ".tool-versions:1"),
        ("python", "3.11.2", "prefix", ".tool-versions:4"),
    ]
    assert found.ignored == [".tool-versions:2: imageci does not know which package gives 'terraform'",
                             ".tool-versions:3: ruby 'system' is not a version number"]


def test_a_project_without_runtime_files_declares_nothing(tmp_path: Path) -> None:
    (tmp_path / ".python-version").write_text("system\n")
    (tmp_path / "package.json").write_text('{"name": "x"}')
    found = declared_runtimes(tmp_path)
    assert found.constraints == [] and found.ignored == [".python-version:1: 'system' names no version"]


@pytest.mark.parametrize(("name", "content", "where", "message"), [
    ("runtime.txt", "\nruby-3.2\n", "runtime.txt:2", "expected python-VERSION"),
    ("package.json", '{\n  "engines": {\n    "node": >=18\n  }\n}', "package.json:3", "not JSON"),
    ("package.json", '{\n  "engines": {\n    "node": "not a range!"\n  }\n}', "package.json:3",
     "not a semver range"),
    ("package.json", '{"engines": ["node"]}', "package.json:1", "'engines' must be an object"),
    (".tool-versions", "python 3.11\nnodejs\n", ".tool-versions:2", "expected 'TOOL VERSION'"),
])
def test_a_bad_runtime_file_is_a_file_line_error(tmp_path: Path, name: str, content: str, where: str,
                                                 message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(SourceError) as caught:
        declared_runtimes(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / name}:{where.rsplit(':', 1)[1]}: ") and message in str(
        caught.value)


def test_an_images_runtimes_come_from_its_bom() -> None:
    bom = Bom(packages=[_pkg("python3", "3.13.5-1"), _pkg("python3.13", "3.13.5-2"), _pkg("python3.11", "3.11.2-6"),
                        _pkg("nodejs", "18.19.0+dfsg-6~deb12u2"), _pkg("golang-1.19-go", "1.19.8-2")])
    assert upstream_version("1:18.19.0+dfsg-6") == "18.19.0" and upstream_version("2:1.19~1") == "1.19"
    python, node, go = runtime_of(bom, "python"), runtime_of(bom, "node"), runtime_of(bom, "go")
    assert python is not None and (python.version, python.package.name) == ("3.13.5", "python3")
    assert node is not None and node.version == "18.19.0"
    assert go is not None and go.version == "1.19.8"
    assert runtime_of(bom, "ruby") is None
    wants = [RuntimeConstraint("python", "3.11", "prefix", ".python-version", 1),
             RuntimeConstraint("node", ">=18 <21", "npm-range", "package.json", 3),
             RuntimeConstraint("ruby", "3.1", "prefix", ".tool-versions", 2)]
    assert [u.describe() for u in unmet(wants, bom)] == [
        ".python-version:1 wants python 3.11; the image has python 3.13.5 (python3 3.13.5-1)",
        ".tool-versions:2 wants ruby 3.1; the image has no ruby (no package ruby)"]


def test_a_dotted_version_matches_by_its_leading_numbers() -> None:
    c = RuntimeConstraint("python", "3.11", "prefix", ".python-version", 1)
    assert satisfies(c, "3.11.2") and satisfies(c, "3.11") and not satisfies(c, "3.1") \
        and not satisfies(c, "3.110.1") and not satisfies(c, "3.13.5")


def _npm_semver() -> Path:
    """npm's own semver module (the oracle for engines.node): next to the npm the host setup installs."""
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: scripts/host-setup.sh --test installs it"
    return Path(os.path.realpath(npm)).parent.parent


VERSIONS = st.tuples(st.integers(0, 25), st.integers(0, 12), st.integers(0, 12)).map(lambda t: ".".join(map(str, t)))
RANGES = st.one_of(
    st.builds(lambda op, v: f"{op}{v}", st.sampled_from(["", "^", "~", ">=", "<", ">", "<=", "="]), VERSIONS),
    st.builds(lambda a, b: f">={a} <{b}", st.integers(0, 25), st.integers(0, 25)),
    st.builds(lambda a, b: f"{a}.x || {b}.x", st.integers(0, 25), st.integers(0, 25)),
    st.builds(lambda a, b: f"{a} - {b}", VERSIONS, VERSIONS),
    st.builds(lambda a, b: f"^{a}.{b}", st.integers(0, 25), st.integers(0, 12)),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(VERSIONS, RANGES), min_size=20, max_size=20))
def test_engines_node_ranges_agree_with_npms_semver(pairs: list[tuple[str, str]]) -> None:
    npm_dir = _npm_semver()
    script = ("const semver = require(require.resolve('semver', {paths: [process.argv[1]]}));"
              "const pairs = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "console.log(JSON.stringify(pairs.map(([v, r]) => semver.satisfies(v, r))));")
    done = subprocess.run(["node", "-e", script, str(npm_dir)], input=json.dumps(pairs), capture_output=True,
                          text=True, timeout=60, check=True)
    theirs = json.loads(done.stdout)
    ours = [satisfies(RuntimeConstraint("node", r, "npm-range", "package.json", 1), v) for v, r in pairs]
    assert ours == theirs, [(p, a, b) for p, a, b in zip(pairs, ours, theirs, strict=True) if a != b]


def test_the_runtime_the_suite_declares_is_named_first() -> None:
    changes = [PackageChange(type="deb", name="libc6", arch="amd64", change="upgraded", before="2.36-9",
                             after="2.41-12"),
               PackageChange(type="deb", name="libpython3.13-stdlib", arch="amd64", change="added", after="3.13.5-2"),
               PackageChange(type="deb", name="libssl3", arch="amd64", change="removed", before="3.0.17-1"),
               PackageChange(type="deb", name="python3", arch="amd64", change="upgraded", before="3.11.2-1+b1",
                             after="3.13.5-1"),
               PackageChange(type="deb", name="tzdata", arch="amd64", change="upgraded", before="2025b-0+deb12u1",
                             after="2025b-4")]
    log = ('Traceback (most recent call last):\n  File "/usr/lib/python3.13/unittest/loader.py", line 396, in '
           "_find_test_path\nModuleNotFoundError: No module named 'imghdr'\n")
    owners = {"/usr/lib/python3.13/unittest/loader.py": "libpython3.13-stdlib"}
    found = rank(changes, [RuntimeConstraint("python", "3.11", "prefix", ".python-version", 1)], log, owners.get)
    assert [c.change.name for c in found] == ["python3", "libpython3.13-stdlib"]
    assert found[0].describe() == "python3 3.11.2-1+b1 → 3.13.5-1 (.python-version:1 declares python 3.11)"
    assert "the log names /usr/lib/python3.13/unittest/loader.py" in found[1].describe()
    # nothing points anywhere: no culprit is made up
    assert rank(changes, [], "AssertionError: 2 != 3\n", lambda _p: None) == []
    # a library the log names by name, with no runtime declared
    named = rank(changes, [], "error while loading shared libraries: libssl3: cannot open\n", lambda _p: None)
    assert [c.change.name for c in named] == ["libssl3"]


@pytest.mark.parametrize(("gating", "new", "old", "blocks", "regression", "says"), [
    (True, "passed", "passed", False, False, "passed on new"),
    (True, "failed", "passed", True, True, "broken by this version"),
    (False, "failed", "passed", False, True, "broken by this version"),
    (True, "failed", "failed", False, False, "reported, not blocking"),
    (True, "failed", None, False, False, "no stable version to compare with"),
    (True, "failed", "unknown", True, False, "a regression cannot be ruled out"),
    (True, "unknown", "passed", True, False, "never ran on new"),
    (False, "unknown", "passed", False, False, "never ran on new"),
])
def test_the_consumers_rule(gating: bool, new: str, old: str | None, blocks: bool, regression: bool,
                            says: str) -> None:
    verdict = judge("app", gating, Side("new", new, "sandbox", "exit 1" if new == "failed" else ""),  # type: ignore[arg-type]
                    Side("old", old, "sandbox") if old else None)  # type: ignore[arg-type]
    assert (verdict.blocks, verdict.regression) == (blocks, regression) and says in verdict.why
