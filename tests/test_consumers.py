"""Consumers: a project that builds on an image registers its suite; it runs in the image's testbeds with
every run of the image's suite, and a gating one blocks the promotion of a version that broke it (it passed
on the current stable version), with the package change most likely responsible named. Here on small
busybox images whose dpkg database says which package changed; the Debian example (a Python runtime bump,
3.11 → 3.13) is in test_consumer_example.py."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from imageci.app import consumers
from imageci.app.access import Principal, Scope
from imageci.app.consumers import ConsumerRequest
from imageci.app.session import Session
from imageci.errors import Forbidden, UsageError

from conftest import Env, busybox_rootfs, write_suite

if TYPE_CHECKING:
    from serverkit import Server

pytestmark = pytest.mark.root

APPLETS = ("sh", "cat", "true", "echo", "grep", "test", "[", "touch", "ls", "mkdir", "env")


def _greeter_image(path: Path, version: str, greeting: str) -> Path:
    """A busybox image with a dpkg database: greeter VERSION owns /usr/bin/greet (which prints GREETING and
    its argument); tzdata changes with every version too (a change nothing points at)."""
    busybox_rootfs(path, f"greeter {version}", APPLETS)
    status = "".join(
        f"Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\nInstalled-Size: 1\n"
        f"Maintainer: Nobody <nobody@example.org>\nArchitecture: amd64\nVersion: {v}\nDescription: {name}\n\n"
        for name, v in (("greeter", version), ("tzdata", f"2025{version[0]}-1")))
    files = {"var/lib/dpkg/status": status.encode(),
             "var/lib/dpkg/info/greeter.list": b"/.\n/usr\n/usr/bin\n/usr/bin/greet\n",
             "var/lib/dpkg/info/tzdata.list": b"/.\n/usr\n/usr/share\n/usr/share/zoneinfo\n",
             "usr/bin/greet": f'#!/bin/sh\necho "{greeting} $1"\n'.encode()}
    with tarfile.open(path, "a") as tar:
        for d in ("var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/info", "usr", "usr/bin", "usr/share",
                  "usr/share/zoneinfo"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1760000000
            tar.addfile(info)
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(body), 1760000000
            info.mode = 0o755 if name.startswith("usr/bin") else 0o644
            tar.addfile(info, io.BytesIO(body))
    return path


def _label(env: Env, n: int) -> str:
    """NAME@SERIAL of img's Nth version."""
    return f"img@{sorted(v.serial for v in env.catalog.versions('img'))[n - 1]}"


CHECK = """#!/bin/sh
out=$(/usr/bin/greet world)
[ "$out" = "hello world" ] || { echo "/usr/bin/greet world printed: $out" >&2; exit 1; }
echo ok
"""


@pytest.fixture
def greeter(env: Env, tmp_path: Path) -> tuple[Env, Path]:
    """img@1 (greeter 1.4-1, stable) imported with a suite that passes on both versions; the consumer's project."""
    suite = write_suite(tmp_path / "suite", {"sh-works": "#!/bin/sh\necho fine\n"})
    done = env.cli("import", "img", str(_greeter_image(tmp_path / "v1.tar", "1.4-1", "hello")), "--suite", str(suite))
    assert done.returncode == 0, done.stderr
    assert env.cli("test", _label(env, 1)).returncode == 0
    assert env.cli("promote", _label(env, 1)).returncode == 0
    project = write_suite(tmp_path / "app", {"check.sh": CHECK})
    return env, project


def test_a_gating_consumer_blocks_the_version_that_broke_it_and_names_the_package(greeter: tuple[Env, Path],
                                                                                   tmp_path: Path) -> None:
    env, project = greeter
    added = env.cli("consumers", "add", "app", "--image", "img", "--suite", str(project), "--command", "./check.sh",
                    "--gating")
    assert added.returncode == 0, added.stderr
    strict = write_suite(tmp_path / "strict", {"check.sh": "#!/bin/sh\necho 'needs /usr/bin/fortune' >&2\nexit 1\n"})
    assert env.cli("consumers", "add", "strict", "--image", "img", "--suite", str(strict), "--command",
                   "./check.sh").returncode == 0
    listed = json.loads(env.cli("consumers", "list", "--json").stdout)
    assert [(r["name"], r["gating"], r["test"]) for r in listed] == [("app", True, "consumer:app"),
                                                                      ("strict", False, "consumer:strict")]

    suite = tmp_path / "suite"
    done = env.cli("import", "img", str(_greeter_image(tmp_path / "v2.tar", "2.0-1", "Hello,")), "--suite", str(suite))
    assert done.returncode == 0, done.stderr
    ran = env.cli("test", _label(env, 2))
    assert ran.returncode == 1, ran.stdout + ran.stderr  # a consumer failed
    assert "consumer:app [sandbox]" in ran.stdout and "/usr/bin/greet world printed: Hello, world" in ran.stdout
    # app had no verdict on stable at its snapshot: it ran there too, and passed
    v1, v2 = _label(env, 1), _label(env, 2)
    assert f"also ran on the stable version {v1}" in ran.stdout
    assert ran.stdout.index("pass  consumer:app [sandbox]") > ran.stdout.index(f"stable version {v1}")

    gate = env.cli("gate", _label(env, 2))
    assert gate.returncode == 5, gate.stdout
    assert "consumers not passed" in gate.stdout
    assert (f"consumer app (gating): failed on {v2} (sandbox: exit 1: /usr/bin/greet world printed: Hello, world), "
            f"and passed on {v1}: broken by this version") in gate.stdout
    assert "likely cause: greeter 1.4-1 → 2.0-1 (the log names /usr/bin/greet)" in gate.stdout
    assert "tzdata" not in gate.stdout  # it changed too, and nothing points at it
    assert f"consumer strict (not gating): failed on {v2}" in gate.stdout and "reported, not blocking" in gate.stdout
    status = json.loads(env.cli("gate", _label(env, 2), "--json").stdout)
    [section] = [s for s in status["sections"] if s["name"] == "consumers"]
    assert section["holds"] is False and "1 broken by this version" in section["summary"]

    refused = env.cli("promote", _label(env, 2))
    assert refused.returncode == 5 and "broken by this version" in refused.stderr

    # the consumer fixes itself (a new snapshot: a new content digest, judged afresh on both versions)
    (project / "check.sh").write_text("#!/bin/sh\n/usr/bin/greet world | grep -qi 'hello.*world'\n")
    again = env.cli("test", _label(env, 2))
    assert again.returncode == 1 and "fail  consumer:strict" in again.stdout  # strict still fails: not gating
    assert "pass  consumer:app" in again.stdout
    assert env.cli("gate", _label(env, 2)).returncode == 0
    assert env.cli("promote", _label(env, 2)).returncode == 0


def test_removing_a_consumer_stops_it_running_and_gating(greeter: tuple[Env, Path], tmp_path: Path) -> None:
    env, project = greeter
    assert env.cli("consumers", "add", "app", "--image", "img", "--suite", str(project), "--command",
                   "./check.sh", "--gating").returncode == 0
    always = write_suite(tmp_path / "always", {})
    assert env.cli("consumers", "add", "always", "--image", "img", "--suite", str(always), "--command",
                   "echo broken; exit 3", "--gating").returncode == 0
    done = env.cli("import", "img", str(_greeter_image(tmp_path / "v2.tar", "2.0-1", "Hello,")), "--suite",
                   str(tmp_path / "suite"))
    assert done.returncode == 0
    assert env.cli("test", _label(env, 2)).returncode == 1
    gate = env.cli("gate", _label(env, 2))
    assert gate.returncode == 5 and "consumer app (gating)" in gate.stdout
    # a gating consumer that fails on stable too did not break because of this version: it does not block
    assert (f"consumer always (gating): failed on {_label(env, 2)} (sandbox: exit 3: broken); it failed on "
            f"{_label(env, 1)} (sandbox: exit 3: broken) too: reported, not blocking") in gate.stdout
    removed = env.cli("consumers", "remove", "app")
    assert removed.returncode == 0 and "removed consumer app of img" in removed.stdout
    assert env.cli("gate", _label(env, 2)).returncode == 0
    assert env.cli("consumers", "remove", "always").returncode == 0
    ran = env.cli("test", _label(env, 2))
    assert ran.returncode == 0 and "consumer:" not in ran.stdout
    assert [r["name"] for r in json.loads(env.cli("consumers", "list", "--removed", "--json").stdout)] == [
        "always", "app"]
    assert env.cli("consumers", "remove", "app").returncode == 2


def _suite_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A git repository whose ``ci/consumer`` holds a suite (and a README that is not part of it)."""
    repo = tmp_path / "repo"
    write_suite(repo / "ci" / "consumer", {"check.sh": "#!/bin/sh\n[ -f ready ] && [ \"$PIP_NO_INDEX\" = 1 ] && "
                                                       "ls \"$PIP_FIND_LINKS\" | grep -q demo-1.0 && echo from-git\n"})
    (repo / "README").write_text("not part of the suite\n")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "suite"], check=True)
    return repo, git


def test_a_suite_from_git_with_setup_and_a_wheelhouse(greeter: tuple[Env, Path], tmp_path: Path) -> None:
    env, _project = greeter
    repo, git = _suite_repo(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "demo-1.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    added = env.cli("consumers", "add", "fromgit", "--image", "img", "--git", str(repo), "--ref", "main",
                    "--subdir", "ci/consumer", "--setup", "touch ready", "--command", "./check.sh",
                    "--wheelhouse", str(wheels), "--json")
    assert added.returncode == 0, added.stderr
    row = json.loads(added.stdout)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert row["revision"] == head and row["ref"] == "main" and row["subdir"] == "ci/consumer"
    ran = env.cli("run", _label(env, 1), "consumer:fromgit")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    log = env.cli("log", _label(env, 1), "consumer:fromgit").stdout
    assert "--- setup: exit 0" in log and "from-git" in log
    _bad_sources_are_refused(env, repo, tmp_path)
    _links_out_are_refused_and_dot_git_left_out(env, repo, git)


def _bad_sources_are_refused(env: Env, repo: Path, tmp_path: Path) -> None:
    """A bad ref, a missing directory, a broken runtime file: refused with the reason, nothing registered."""
    bad = env.cli("consumers", "add", "x", "--image", "img", "--git", str(repo), "--ref", "nope", "--command", "true")
    assert bad.returncode == 2 and "no commit 'nope'" in bad.stderr
    gone = env.cli("consumers", "add", "y", "--image", "img", "--suite", str(tmp_path / "absent"), "--command", "t")
    assert gone.returncode == 2 and "no such directory" in gone.stderr
    broken = write_suite(tmp_path / "broken", {})
    (broken / "runtime.txt").write_text("ruby-3.2\n")
    bad_file = env.cli("consumers", "add", "z", "--image", "img", "--suite", str(broken), "--command", "true")
    assert bad_file.returncode == 2 and "runtime.txt:1: expected python-VERSION" in bad_file.stderr
    both = env.cli("consumers", "add", "w", "--image", "img", "--suite", str(broken), "--git", str(repo),
                   "--ref", "main", "--command", "true")
    assert both.returncode == 2 and "one of them" in both.stderr
    assert [r["name"] for r in json.loads(env.cli("consumers", "list", "--json").stdout)] == ["fromgit"]
    unknown = env.cli("run", _label(env, 1), "consumer:nobody")
    assert unknown.returncode == 2 and "no consumer nobody of img; its consumers: fromgit" in unknown.stderr

def _links_out_are_refused_and_dot_git_left_out(env: Env, repo: Path, git: list[str]) -> None:
    """A tree with a link out of it is refused; a directory suite is taken without its .git."""
    subprocess.run([*git, "checkout", "-q", "-b", "evil"], check=True)
    (repo / "ci" / "consumer" / "secret").symlink_to("/etc/shadow")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "evil"], check=True)
    evil = env.cli("consumers", "add", "e", "--image", "img", "--git", str(repo), "--ref", "evil", "--command", "t")
    assert evil.returncode == 2 and "cannot be taken as a suite" in evil.stderr, evil.stderr
    outside = env.cli("consumers", "add", "d", "--image", "img", "--suite", str(repo / "ci" / "consumer"),
                      "--command", "t")
    assert outside.returncode == 2 and "a symlink out of the suite (/etc/shadow)" in outside.stderr
    (repo / "ci" / "consumer" / "secret").unlink()
    (repo / "ci" / "consumer" / "secret").symlink_to("check.sh")
    plain = env.cli("consumers", "add", "plain", "--image", "img", "--suite", str(repo / "ci" / "consumer"),
                    "--command", "test ! -e .git && test -L secret && echo copied-as-link")
    assert plain.returncode == 0, plain.stderr
    (repo / "ci" / "consumer" / ".git").mkdir()
    again = env.cli("consumers", "add", "plain2", "--image", "img", "--suite", str(repo / "ci" / "consumer"),
                    "--command", "test ! -e .git && echo no-git")
    assert again.returncode == 0, again.stderr
    for name, word in (("plain", "copied-as-link"), ("plain2", "no-git")):
        assert env.cli("run", _label(env, 1), f"consumer:{name}").returncode == 0
        assert word in env.cli("log", _label(env, 1), f"consumer:{name}").stdout


def test_registering_needs_scope_promote_in_the_products_namespace(greeter: tuple[Env, Path]) -> None:
    env, project = greeter
    s = Session.open(env.settings)
    request = ConsumerRequest(name="app", product="img", suite=str(project), command="./check.sh", gating=True)
    with pytest.raises(Forbidden, match="promote"):
        consumers.add(s, request, by=Principal(name="r", namespace="default", scopes=frozenset({Scope.READ})))
    with pytest.raises(UsageError):
        consumers.add(s, request, by=Principal(name="o", namespace="elsewhere", scopes=frozenset({Scope.ADMIN})))
    maint = Principal(name="maint", namespace="default", scopes=frozenset({Scope.PROMOTE}))
    with pytest.raises(UsageError, match="read on the machine that registers it"):
        consumers.add(s, request, by=maint)  # a token may not read the server's directories
    with pytest.raises(UsageError, match="repository URL"):
        consumers.add(s, request.model_copy(update={"suite": None, "git": str(project), "ref": "main"}), by=maint)
    assert s.catalog.consumers() == []
    row = consumers.add(s, request)
    assert row.product == "img" and row.gating
    with pytest.raises(UsageError, match="exists"):
        consumers.add(s, request)
    s.close()


def test_check_consumer_reads_declared_runtimes_before_running(greeter: tuple[Env, Path], tmp_path: Path) -> None:
    env, project = greeter
    (project / ".tool-versions").write_text("python 3.11\n")
    done = env.cli("check-consumer", "img:stable", str(project), "--command", "./check.sh")
    assert done.returncode == 11, done.stdout + done.stderr
    assert ".tool-versions:1 wants python 3.11; the image has no python (no package python3)" in done.stderr
    assert "not run" in done.stderr
    anyway = env.cli("check-consumer", "img:stable", str(project), "--command", "./check.sh", "--run-anyway",
                     "--json")
    assert anyway.returncode == 0, anyway.stderr
    out = json.loads(anyway.stdout)
    assert out["verdict"] == "pass" and out["runtimes"]["unmet"] and out["exit_code"] == 0
    (project / ".tool-versions").unlink()
    quiet = env.cli("check-consumer", _label(env, 1), str(project))
    assert quiet.returncode == 0 and "declares no runtime" in quiet.stdout
    failing = env.cli("check-consumer", _label(env, 1), str(project), "--command", "./check.sh; exit 4")
    assert failing.returncode == 1 and "fail  consumer:app" in failing.stdout
    (project / "runtime.txt").write_text("python3.11\n")
    bad = env.cli("check-consumer", _label(env, 1), str(project))
    assert bad.returncode == 2 and "runtime.txt:1: expected python-VERSION" in bad.stderr
    absent = env.cli("check-consumer", _label(env, 1), str(tmp_path / "nowhere"))
    assert absent.returncode == 2 and "no such directory" in absent.stderr


def test_a_servers_consumers_run_on_a_laptop_and_its_gate_judges_them(greeter: tuple[Env, Path],
                                                                     tmp_path: Path) -> None:
    """The consumers registered on a server run wherever its versions are tested (the snapshot fetched by
    digest), their attempts count on the server — a reference run on the server's stable version too — and
    the server's gate names the culprit; a project's
    pre-deploy check reads the version's packages through the server."""
    import os
    import sys

    from serverkit import _token, start_server

    env, project = greeter
    assert env.cli("consumers", "add", "app", "--image", "img", "--suite", str(project), "--command",
                   "./check.sh", "--gating").returncode == 0
    assert env.cli("import", "img", str(_greeter_image(tmp_path / "v2.tar", "2.0-1", "Hello,")), "--suite",
                   str(tmp_path / "suite")).returncode == 0
    v1, v2 = _label(env, 1), _label(env, 2)
    running = start_server(env.home)
    server = next(running)
    try:
        tester = _token(server, "laptop", "default", "read,test")
        laptop = {k: v for k, v in os.environ.items() if not k.startswith("IMAGECI_")}
        laptop |= {"IMAGECI_HOME": str(tmp_path / "laptop"), "IMAGECI_SERVER": server.url, "IMAGECI_TOKEN": tester,
                   "XDG_CONFIG_HOME": str(tmp_path / "cfg")}

        def remote(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "imageci.cli", *args], capture_output=True, text=True,
                                  env=laptop, timeout=600)

        listed = remote("consumers", "list", "--json")
        assert [r["name"] for r in json.loads(listed.stdout)] == ["app"]
        ran = remote("test", v2)
        assert ran.returncode == 1 and "fail  consumer:app [sandbox]" in ran.stdout, ran.stdout + ran.stderr
        # the server had no verdict of it on its stable version: it ran there too, here, recorded there
        assert f"also ran on the stable version {v1}" in ran.stdout
        assert f"▼ regression    consumer:app [sandbox] — passed on {v1}" in ran.stdout
        gate = remote("gate", v2, "--json")
        [section] = [s for s in json.loads(gate.stdout)["sections"] if s["name"] == "consumers"]
        assert not section["holds"]
        assert "  likely cause: greeter 1.4-1 → 2.0-1 (the log names /usr/bin/greet)" in section["details"]

        _consumers_over_the_api(server, listed.stdout)
        _pre_deploy_check_through_the_server(remote, project)
    finally:
        next(running, None)


def _consumers_over_the_api(server: Server, listed: str) -> None:
    """A token that may only read sees consumers, may not add or remove them; over the API a consumer is a
    git URL the server fetches, never a path on the server's machine."""
    from serverkit import API, _token

    reader = _token(server, "reader", "default", "read")
    refused = httpx.delete(f"{server.url}{API}/consumers/app", headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403 and "promote" in refused.json()["error"]
    snapshot = httpx.get(f"{server.url}{API}/consumers/app/snapshot", headers={"Authorization": f"Bearer {reader}"})
    assert snapshot.status_code == 200 and snapshot.headers["etag"].strip('"') in json.loads(listed)[0][
        "snapshot"]
    assert httpx.get(f"{server.url}{API}/consumers/app/snapshot").status_code == 404  # anonymous: not there
    # over the API a consumer is a git URL the server fetches: never a path on the server's machine
    maint = {"Authorization": f"Bearer {_token(server, 'maint', 'default', 'promote')}"}
    body = {"name": "sneaky", "product": "img", "command": "true"}
    for source in ({"suite": "/etc"}, {"git": "/srv/repo", "ref": "main"}, {"git": "file:///etc", "ref": "x"},
                   {"git": "https://git.example.org/app.git", "ref": "main", "wheelhouse": "/root"}):
        posted = httpx.post(f"{server.url}{API}/consumers", headers=maint, json={**body, **source})
        assert posted.status_code == 400, (source, posted.text)
    assert "run `imageci consumers add` on the server's machine" in httpx.post(
        f"{server.url}{API}/consumers", headers=maint, json={**body, "suite": "/etc"}).json()["error"]


def _pre_deploy_check_through_the_server(remote: Callable[..., subprocess.CompletedProcess[str]],
                                         project: Path) -> None:
    (project / ".tool-versions").write_text("nodejs 20.11\n")
    check = remote("check-consumer", "img:stable", str(project), "--command", "./check.sh")
    assert check.returncode == 11 and ".tool-versions:1 wants node 20.11; the image has no node" in check.stderr
    (project / ".tool-versions").unlink()
    check = remote("check-consumer", "img:stable", str(project), "--command", "./check.sh", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["verdict"] == "pass", check.stderr
    check = remote("check-consumer", "img:testing", str(project), "--command", "./check.sh")
    assert check.returncode == 1 and "/usr/bin/greet world printed: Hello, world" in check.stdout
