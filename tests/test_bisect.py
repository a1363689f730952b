"""`imageci bisect` (issue 33.2) on a corpus built here (tests/bisectkit.py): busybox images whose dpkg
database holds many small packages. One of 50 and one of 200 changed packages breaks the suite, a pair
breaks it only together, a file outside packages breaks it, a failure is flaky, and a maintainer script's
work matters: each gives its exact culprit or its exact refusal. Intermediate images are made from the
two versions' trees and run on the sandbox."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest
from clikit import run_cli

from imageci.build.intermediate import Move, recipe, synthesize
from imageci.policy.bisection import Search, signature

from bisectkit import WORKS, Pkg, apk_image, image, many, rpm_image, upgraded
from conftest import IMAGECI, REPO, Env, write_suite
from test_notify import Receiver, receiver  # noqa: F401 (the fixture)

pytestmark = pytest.mark.root


def _product(env: Env, tmp_path: Path, name: str, *versions: tuple[dict[str, Pkg], dict[str, bytes]]) -> list[str]:
    """The versions imported, in order, with the suite; the first tested (it passes: the good end)."""
    suite = write_suite(tmp_path / f"suite-{name}", {"works": WORKS})
    refs = []
    for i, (packages, files) in enumerate(versions):
        done = env.cli("import", name, str(image(tmp_path / f"{name}-{i}.tar", packages, files)), "--suite",
                       str(suite))
        assert done.returncode == 0, done.stderr
        refs.append(f"{name}@{env.catalog.versions(name)[-1].serial}")
    first = env.cli("test", refs[0])
    assert first.returncode == 0, first.stdout + first.stderr
    return refs


def _bisect(env: Env, ref: str, *more: str) -> tuple[int, dict[str, object]]:
    """Exit code and result of one bisection (its printed form checked in one test, its JSON kept)."""
    done = env.cli("bisect", ref, "works", *more)
    kept = env.cli("bisections", ref, "works", "--json")
    assert kept.returncode == 0 and json.loads(kept.stdout), done.stdout + done.stderr
    result: dict[str, object] = json.loads(kept.stdout)[-1]
    result["printed"] = done.stdout + done.stderr
    return done.returncode, result


def _culprits(result: dict[str, object]) -> list[str]:
    return [c["package"] or c["key"] for c in result["culprits"]]  # type: ignore[attr-defined,index]


def test_the_search_finds_one_and_a_pair_in_few_steps() -> None:
    for n in (50, 200):
        units = [f"u{i:03d}" for i in range(n)]
        for bad in ({"u007"}, {units[-1]}, {"u003", units[n // 2 + 1]}):
            search = Search(lambda sets, bad=bad: ["fail" if bad <= set(s) else "pass" for s in sets])
            assert set(search.minimize(units)) == bad
            if len(bad) == 1:
                assert len(search.asked) <= math.ceil(math.log2(n)) + 1
    flaky = Search(lambda sets: ["unresolved" if "u001" in s else "pass" for s in sets])
    assert flaky.minimize(["u000", "u001"]) == ["u000", "u001"]  # nothing smaller fails as pinned


def test_a_failure_signature_ignores_what_changes_from_run_to_run() -> None:
    a = signature("fail", 1, "# ./works\nbroken: /usr/share/pkg017/status at 0x7f3a2b 12:01:33\n--- stderr ---\n")
    b = signature("fail", 1, "# ./works\nbroken: /usr/share/pkg017/status at 0x55aa10 13:44:02\n")
    assert a == b == "fail (exit 1): broken: /usr/share/pkgN/status at N N:N:N"
    assert signature("fail", 2, "broken: x\n") != signature("fail", 1, "broken: x\n")


def test_one_of_fifty_changed_packages_is_named_with_its_changelog(env: Env, tmp_path: Path) -> None:
    base = many(50)
    good, bad = _product(env, tmp_path, "c50", (base, {}), (upgraded(base, breaks="pkg017"), {}))
    code, result = _bisect(env, bad)
    assert code == 0, result["explanation"]
    assert result["finding"] == "culprit" and result["confirmed"] is True and result["good"] == good
    assert _culprits(result) == ["pkg017"] and result["candidates"] == 51  # and the marker file
    [culprit] = result["culprits"]  # type: ignore[misc]
    assert culprit["before"] == "1.0-1" and culprit["after"] == "2.0-1" and culprit["source"] == "src004"
    assert "Break the status file." in culprit["changelog"][0] and "1.0-1" not in culprit["changelog"][0]
    assert result["signature"] == "fail (exit 1): broken: /usr/share/pkgN/status"
    assert result["test_runs"] <= 2 * math.log2(50) + 2 * 3 + 4
    whats = [s["what"] for s in result["steps"]]  # type: ignore[attr-defined,index]
    assert whats[:3] == ["good end", "bad end", "every change"] and whats[-2:] == [
        "confirm: good + culprit", "confirm: bad − culprit"]
    kept = json.loads(env.cli("bisections", bad, "--json").stdout)
    assert [(k["id"], k["finding"]) for k in kept] == [(result["id"], "culprit")]
    assert "pkg017 1.0-1 → 2.0-1 (source src004)" in str(result["printed"])
    assert "culprit: pkg017 1.0-1 → 2.0-1: the good image with it fails as the bad end does" in str(result["printed"])
    verified = env.cli("verify")  # the intermediates are caches with no blob: not damage
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_one_of_two_hundred_added_removed_and_downgraded_too(env: Env, tmp_path: Path) -> None:
    base = many(200)
    later = upgraded({k: v for k, v in base.items() if k >= "pkg010"}, breaks="pkg123")
    later |= {"newpkg": Pkg("1.0-1"), "pkg199": Pkg("0.9-1", source="src049")}  # added; downgraded
    _good, bad = _product(env, tmp_path, "c200", (base, {}), (later, {}))
    code, result = _bisect(env, bad, "-j", "2")
    assert code == 0, result["explanation"]
    assert _culprits(result) == ["pkg123"] and result["candidates"] == 202
    assert result["test_runs"] <= 2 * math.log2(202) + 2 * 3 + 4
    searched = [s["answer"] for s in result["steps"] if s["what"] == "search"]  # type: ignore[attr-defined,index]
    assert searched and set(searched) <= {"fail", "pass"}  # two at a time, and no step was unresolved


def test_an_apk_package_is_found_too(env: Env, tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"works": WORKS})
    base = many(12, version="1.0-r0")
    refs = []
    for i, packages in enumerate((base, upgraded(base, breaks="pkg007", version="2.0-r0"))):
        done = env.cli("import", "alp", str(apk_image(tmp_path / f"alp-{i}.tar", packages)), "--suite", str(suite))
        assert done.returncode == 0, done.stderr
        refs.append(f"alp@{env.catalog.versions('alp')[-1].serial}")
    assert env.cli("test", refs[0]).returncode == 0
    code, result = _bisect(env, refs[1])
    assert code == 0, result["explanation"]
    [culprit] = result["culprits"]  # type: ignore[misc]
    assert culprit["key"] == "apk:pkg007:x86_64" and culprit["after"] == "2.0-r0"


def test_an_rpm_package_is_found_too(env: Env, tmp_path: Path) -> None:
    """rpm's sqlite database: the moved package's header row taken from the bad image, indexes rebuilt."""
    suite = write_suite(tmp_path / "suite", {"works": WORKS})
    base = {f"rpkg{i}": Pkg("1.0-1") for i in range(6)}
    refs = []
    for i, packages in enumerate((base, upgraded(base, breaks="rpkg3"))):
        done = env.cli("import", "rpms", str(rpm_image(tmp_path / f"rpms-{i}.tar", packages)), "--suite", str(suite))
        assert done.returncode == 0, done.stderr
        refs.append(f"rpms@{env.catalog.versions('rpms')[-1].serial}")
    assert env.cli("test", refs[0]).returncode == 0
    code, result = _bisect(env, refs[1], "--repeat", "2")
    assert code == 0, result["explanation"]
    [culprit] = result["culprits"]  # type: ignore[misc]
    assert culprit["key"] == "rpm:rpkg3:noarch" and (culprit["before"], culprit["after"]) == ("1.0-1", "2.0-1")
    diff = env.cli("diff", refs[0], refs[1]).stdout  # rpm's files are its packages': not outside them
    assert "package ~ rpkg3 1.0-1 → 2.0-1" in diff and "/usr/share/rpkg3/status" not in diff
    culprit_only = next(s for s in result["steps"] if s["what"] == "confirm: good + culprit")  # type: ignore[attr-defined,union-attr]
    assert culprit_only["answer"] == "fail"


def test_the_benchmark_names_every_culprit_where_binary_search_misses_the_pair() -> None:
    """bench/bisect_corpus.py in its quick mode: one culprit of 20, one of 5, a pair that breaks only together,
    a file outside packages — each named exactly; a binary search over the changes names one of the pair."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bisect_corpus.py"), "--quick"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(ln.startswith("pair    : pair-a, pair-b (") for ln in lines), done.stdout
    assert any(ln.startswith("files   : files (") for ln in lines), done.stdout
    assert "culprit right in 4/4 cases (binary search 3/4)" in lines[-1], lines[-1]


def test_a_flaky_failure_stops_with_that_finding(env: Env, tmp_path: Path) -> None:
    base = many(8)
    _good, bad = _product(env, tmp_path, "flaky", (base, {}), (upgraded(base), {"etc/flaky": b""}))
    code, result = _bisect(env, bad, "--repeat", "12")  # all 12 fail by chance: 1 in 4096
    assert code == 12 and result["finding"] == "unreliable-ends"
    assert "did not fail every time" in result["explanation"] and result["culprits"] == []


def test_when_a_maintainer_script_matters_bisect_says_so(env: Env, tmp_path: Path) -> None:
    """The bad version's postinst switched an alternative (dpkg's own state): no change taken from the trees
    reproduces it, so good + every change passes and no culprit is named."""
    base = many(6)
    _good, bad = _product(env, tmp_path, "alt", (base, {"var/lib/dpkg/alternatives/app": b"good\n"}),
                          (upgraded(base), {"var/lib/dpkg/alternatives/app": b"broken\n"}))
    done = env.cli("bisect", bad, "works", "--json")
    code, result = done.returncode, json.loads(done.stdout)
    assert code == 13 and result["finding"] == "not-reproduced"
    assert "maintainer scripts" in result["explanation"] and result["culprits"] == []


def test_an_intermediate_is_made_from_links_and_leaves_both_trees_as_they_were(env: Env, tmp_path: Path) -> None:
    base = many(4)
    later = upgraded(base) | {"extra": Pkg("1.0-1")}
    good, bad = _product(env, tmp_path, "synth", (base, {"etc/app.conf": b"good\n"}), (later, {}))
    trees = []
    for ref in (good, bad):
        assert env.cli("test", ref).returncode in (0, 1)
        digest = next(a.digest for a in env.catalog.resolve(ref).artifacts if a.kind == "rootfs")
        trees.append(digest)
    cache = env.settings.rootfs_cache
    before = {d: subprocess.run(["tar", "-C", str(cache / d), "-cf", "-", "."], capture_output=True).stdout
              for d in trees}
    moves = [Move("deb:pkg001:amd64", "pkg001", "amd64", "1.0-1", "2.0-1", "src000"),
             Move("deb:extra:amd64", "extra", "amd64", None, "1.0-1"), Move("files", paths=("/etc/app.conf",))]
    out = synthesize(cache, trees[0], trees[1], moves)
    assert out == cache / recipe(trees[0], trees[1], moves)
    assert (out / "usr/share/pkg001/status").read_text() == "ok 2.0-1"
    assert (out / "usr/share/pkg000/status").read_text() == "ok 1.0-1"
    assert (out / "usr/share/extra/status").exists() and not (out / "etc/app.conf").exists()
    status = (out / "var/lib/dpkg/status").read_text()
    assert "Package: pkg001\n" in status and "Version: 2.0-1" in status and "Package: extra\n" in status
    assert (out / "var/lib/dpkg/info/extra.list").exists()
    for d in trees:  # the ends' trees are untouched (a link shares an inode; nothing was written through)
        assert subprocess.run(["tar", "-C", str(cache / d), "-cf", "-", "."], capture_output=True).stdout \
            == before[d]


def test_investigate_bisects_each_regression_and_the_notification_names_the_culprit(
        env: Env, tmp_path: Path, receiver: Receiver) -> None:  # noqa: F811
    base = many(16)
    good, bad = _product(env, tmp_path, "inv", (base, {}), (upgraded(base, breaks="pkg009"), {}))
    assert env.cli("promote", good).returncode == 0
    ran = subprocess.run([*IMAGECI, "test", bad, "--investigate", "--investigate-budget", "40"],
                         env={**env.env(), "IMAGECI_WEBHOOK_URL": receiver.url}, capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "bisected works [sandbox]: culprit — pkg009 1.0-1 → 2.0-1" in ran.stdout
    [(_headers, body)] = receiver.got
    note = json.loads(body)
    assert note["event"] == "new-failure" and note["changes"] == {"works [sandbox]": "regression"}
    assert any("bisect culprit: pkg009 1.0-1 → 2.0-1" in d for d in note["details"]), note["details"]


def test_a_server_bisects_on_request_and_tells_a_remote_run_its_regressions(env: Env, tmp_path: Path) -> None:
    """Against a server: `imageci test` (run on this machine) gets a reference run on the server's stable
    version — run here, recorded there — so the server and the output tell the regression; `imageci bisect`
    asks the server, which bisects in its background and keeps the finding; a bisection whose process died
    is told aborted."""
    from serverkit import _token, start_server

    suite = write_suite(tmp_path / "suite", {"works": WORKS})
    refs = []
    base = many(8)
    for i, packages in enumerate((base, upgraded(base, breaks="pkg005"))):
        done = env.cli("import", "srv", str(image(tmp_path / f"srv-{i}.tar", packages)), "--suite", str(suite))
        assert done.returncode == 0, done.stderr
        refs.append(f"srv@{env.catalog.versions('srv')[-1].serial}")
    good, bad = refs
    assert env.cli("promote", good, "--force", "--reason", "untested").returncode == 0  # no verdict there yet
    running = start_server(env.home)
    server = next(running)
    try:
        laptop = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
        laptop |= {"IMAGECI_HOME": str(tmp_path / "laptop"), "IMAGECI_SERVER": server.url,
                   "IMAGECI_TOKEN": _token(server, "laptop", "default", "test"), "XDG_CONFIG_HOME": str(tmp_path)}
        started = _a_remote_run_is_told_its_regression(server, laptop, good, bad, tmp_path)
        _the_server_bisects(server, laptop, good, bad, started)
    finally:
        with pytest.raises(StopIteration):
            next(running)
    dead = env.catalog.start_bisection(env.catalog.resolve(bad).id, "works", "sandbox", None, json.dumps(
        {"image": bad, "test": "works", "testbed": "sandbox", "good": None, "finding": "running",
         "explanation": "bisecting"}), env.catalog.resolve(bad).created_at, owner=str(tmp_path / "gone.lock"))
    kept = json.loads(env.cli("bisections", bad, "--json").stdout)
    assert [(k["id"], k["finding"]) for k in kept][-1] == (dead, "aborted") and "died" in kept[-1]["explanation"]


def _remote(laptop: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(args, laptop)


def _a_remote_run_is_told_its_regression(server: Any, laptop: dict[str, str], good: str, bad: str,
                                         tmp_path: Path) -> int:
    """The reference run happens here, once, recorded there; the output, JUnit and the server tell the
    regression. A second run with --investigate starts the bisection on the server: its id."""
    junit = tmp_path / "remote.xml"
    ran = _remote(laptop, "test", bad, "--junit", str(junit))
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert f"testing {bad} " in ran.stdout and f"also ran on the stable version {good}" in ran.stdout
    assert f"▼ regression    works [sandbox] — passed on {good}: broken by this version" in ran.stdout
    there = server.get(f"/api/v1/images/{bad}/results", laptop["IMAGECI_TOKEN"]).json()
    assert there["reference"] == good and {a["test"]: a["change"] for a in there["attempts"]} == {
        "works": "regression"}
    reference = server.get(f"/api/v1/images/{good}/results", laptop["IMAGECI_TOKEN"]).json()
    assert [(r["reference_for"], r["actor"]) for r in reference["runs"]] == [(bad, "laptop")]
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).getroot().iter("property")}
    assert props["imageci.change:works"].startswith("regression: ")
    again = _remote(laptop, "test", bad, "--investigate")  # the regression is bisected on the server
    assert again.returncode == 1 and "reference run" not in again.stdout  # once per test and version
    started = re.search(r"bisecting works \[sandbox\] on the server: bisection (\d+)", again.stdout)
    assert started, again.stdout + again.stderr
    return int(started.group(1))


def _the_server_bisects(server: Any, laptop: dict[str, str], good: str, bad: str, started: int) -> None:
    """`imageci bisect` with a server: answered with the bisection running there, waited for; a bad request
    is a 400 problem, an anonymous one 401."""
    done = _remote(laptop, "bisect", bad, "works", "--repeat", "1", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["id"] >= started  # that one, or (had it ended already) a second
    assert result["finding"] == "culprit" and _culprits(result) == ["pkg005"] and result["good"] == good
    assert result["started"] and result["ended"] and result["steps"][0]["what"] == "good end"
    listed = server.get(f"/api/v1/images/{bad}/bisections", laptop["IMAGECI_TOKEN"]).json()
    assert {b["id"] for b in listed} == {started, result["id"]}
    assert {b["finding"] for b in listed} == {"culprit"} and listed[0]["test"] == "works"
    refused = httpx.post(f"{server.url}/api/v1/images/{bad}/bisections", json={"test": "nope"}, timeout=30,
                         headers={"Authorization": f"Bearer {laptop['IMAGECI_TOKEN']}"})
    assert refused.status_code == 400 and "has no test 'nope'" in refused.text
    anonymous = httpx.post(f"{server.url}/api/v1/images/{bad}/bisections", json={"test": "works"}, timeout=30)
    assert anonymous.status_code == 401
