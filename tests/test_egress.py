"""What the server fetches for a token (a consumer's --git URL): public hosts only unless the operator
lists a host (IMAGECI_GIT_HOSTS), checked after resolving and on every redirect, and one answer for
every failure so the API is no port scanner. Every server here is on 127.0.0.1."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from imageci.app.egress import EgressPolicy, Refused, destination

from conftest import free_port
from serverkit import API, _token, start_server


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "10.1.2.3", "192.168.0.1",
                                  "172.16.0.1", "100.64.0.1", "::1", "::ffff:127.0.0.1", "fe80::1", "224.0.0.1",
                                  "0.0.0.0"])
def test_loopback_link_local_private_and_multicast_are_refused_by_default(host: str) -> None:
    with pytest.raises(Refused, match="not a public address"):
        EgressPolicy().address(host, 443)


def test_a_public_address_is_allowed_and_a_listed_host_only_it() -> None:
    assert EgressPolicy().address("8.8.8.8", 443) == "8.8.8.8"  # a literal: no name server asked
    listed = EgressPolicy.parse("127.0.0.1:9418, Git.Example.org")
    assert listed.address("127.0.0.1", 9418) == "127.0.0.1"  # the operator vouches for it
    for host, port in (("127.0.0.1", 22), ("8.8.8.8", 443)):
        with pytest.raises(Refused, match="not in IMAGECI_GIT_HOSTS"):
            listed.address(host, port)
    for url in ("file:///etc", "ext::sh -c id", "ftp://8.8.8.8/x"):
        with pytest.raises(Refused):
            destination(EgressPolicy(), url)
    pinned = destination(listed, "git://127.0.0.1:9418/repo.git")
    assert pinned.url == "git://127.0.0.1:9418/repo.git"
    ssh = destination(EgressPolicy.parse("127.0.0.1"), "git@127.0.0.1:team/repo.git")
    assert "HostName=127.0.0.1" in ssh.env["GIT_SSH_COMMAND"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A repository holding a suite, served over git's dumb HTTP by a plain file server on 127.0.0.1, and
    a second server that redirects every request to the first: (repo URL, redirector URL)."""
    base = tmp_path_factory.mktemp("egress")
    work = base / "work"
    (work / "suite").mkdir(parents=True)
    (work / "suite" / "check.sh").write_text("#!/bin/sh\necho ok\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "."], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "suite"], check=True)
    served = base / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(served / "repo.git")], check=True)
    subprocess.run(["git", "-C", str(served / "repo.git"), "update-server-info"], check=True)
    port = free_port()
    files = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory",
                              str(served)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/repo.git"

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the handler's name
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}{self.path}")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/info/refs", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
        yield url, f"http://127.0.0.1:{redirector.server_address[1]}/repo.git"
    finally:
        redirector.shutdown()
        files.terminate()
        files.wait(timeout=30)


def _add(url: str, token: str, git: str) -> httpx.Response:
    return httpx.post(f"{url}{API}/consumers", headers={"Authorization": f"Bearer {token}"}, timeout=60,
                      json={"name": f"c{abs(hash(git)) % 10**8}", "product": "infra-base", "git": git, "ref": "main",
                            "subdir": "suite", "command": "./check.sh"})


def test_the_server_fetches_only_what_the_operator_allows(repo: tuple[str, str], tmp_path: Path) -> None:
    url, redirector = repo
    port = url.split(":")[2].split("/")[0]
    closed = free_port()
    for server in start_server(tmp_path / "default"):  # IMAGECI_GIT_HOSTS unset: public hosts only
        token = _token(server, "maint", "infra", "promote")
        answers = {}
        for git in (url, url.replace("127.0.0.1", "localhost"), f"http://127.0.0.1:{closed}/repo.git",
                    redirector, "git://[::1]:9418/x.git", "http://169.254.169.254/latest/meta-data"):
            answer = _add(server.url, token, git)
            assert answer.status_code == 400, (git, answer.text)
            answers[git] = answer.json()["error"].replace(git, "URL")
        assert len(set(answers.values())) == 1, answers  # open port, closed port, metadata: one answer
        assert "could not be fetched" in next(iter(answers.values()))
        assert not re.search(r"refused|resolve|timed out|127\.0\.0|::1", next(iter(answers.values())))
        server_log = (server.home / "server.log").read_text()
        assert "not a public address" in server_log  # the reason is the operator's to read
    for server in start_server(tmp_path / "listed", IMAGECI_GIT_HOSTS=f"127.0.0.1:{port}"):
        token = _token(server, "maint", "infra", "promote")
        added = _add(server.url, token, url)
        assert added.status_code == 201, added.text
        assert added.json()["revision"] and added.json()["snapshot"].startswith("sha256:")
        assert _add(server.url, token, redirector).status_code == 400  # the redirector's port is not listed
    for server in start_server(tmp_path / "redirect", IMAGECI_GIT_HOSTS=redirector.split("/")[2]):
        token = _token(server, "maint", "infra", "promote")
        refused = _add(server.url, token, redirector)  # listed, but it redirects to a host that is not
        assert refused.status_code == 400, refused.text
        assert "is not in IMAGECI_GIT_HOSTS" in (server.home / "server.log").read_text()
