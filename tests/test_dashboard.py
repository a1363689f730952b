"""The web dashboard, served by a real `imageci serve` (and `imageci dashboard`) on 127.0.0.1 over a catalog
seeded by real runs in the sandbox, read by real HTTP clients: pages, paging, escaping, access, forms."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
from urllib.parse import quote

import httpx
import pytest

from imageci.app import queries
from imageci.app.session import Session

from conftest import IMAGECI, REPO
from dashkit import Site

pytestmark = pytest.mark.root  # the seeding runs are real sandbox runs


def test_unknown_things_are_404_pages_not_tracebacks(site: Site) -> None:
    for path in ("/versions/nosuch@1", f"/versions/{site.alpha[0]}x", "/products/nosuch",
                 f"/versions/{site.alpha[0]}/cell?test=nosuch", "/history/alpha?test=nosuch", "/runs/999999",
                 "/no/such/page"):
        r = site.get(path, site.token_a)
        assert r.status_code == 404, (path, r.status_code)
        assert r.headers["content-type"].startswith("text/html"), path
        assert "<h1>Not found" in r.text and "Traceback" not in r.text, path
    r = site.get("/runs/abc", site.token_a)  # a bad parameter is a 400 page
    assert r.status_code in (400, 404) and "Traceback" not in r.text
    assert site.get(f"/versions/{site.alpha[0]}/cell", site.token_a).status_code == 400  # no test given
    vulns = site.get(f"/versions/{site.alpha[0]}/vulns", site.token_a)  # a page of its own, linked from the gate
    assert vulns.status_code == 200 and "No vulnerability feed was imported" in vulns.text
    assert site.get("/versions/nosuch@1/vulns", site.token_a).status_code == 404


def test_html_in_test_names_and_logs_is_text(site: Site) -> None:
    page = site.get(f"/versions/{site.alpha[0]}", site.token_a).text
    assert "&lt;script&gt;" in page and "<script>window" not in page
    cell = site.get(f"/versions/{site.alpha[0]}/cell?test={quote('<script>')}&testbed=sandbox", site.token_a)
    assert cell.status_code == 200
    assert "&lt;b&gt;not bold&lt;/b&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;" in cell.text
    assert "<script>window.pwned" not in cell.text
    assert "Content-Security-Policy" in cell.headers and "script-src 'self'" in cell.headers["content-security-policy"]
    crafted = site.get(f"/versions/{site.alpha[1]}?promoted=true&done=call+0800-FAKE", site.token_a).text
    assert "FAKE" not in crafted and "promoted alpha" not in crafted  # notices come from the catalog, not links
    assert "FAKE" not in site.get("/flaky?added=999&done=FAKE", site.token_a).text
    colours = site.get(f"/versions/{site.alpha[0]}/log?test=colours", site.token_a).text
    assert '<span class="fg-1 b">red and bold</span> plain <span class="fg-2">green</span>' in colours
    assert "\x1b" not in colours


def test_large_logs_are_paged_and_a_missing_log_is_said(site: Site) -> None:
    r = site.get(f"/versions/{site.alpha[0]}/log?test=big", site.token_a)
    assert r.status_code == 200 and "END-OF-BIG-LOG" in r.text  # the end first: where a failure says why
    body = re.search(r'<pre class="log"[^>]*>(.*?)</pre>', r.text, re.S)
    assert body is not None and len(body.group(1)) <= 64 << 10 and "\n1\n" not in body.group(1)
    window = re.search(r"bytes (\d+)–(\d+) of (\d+)", r.text)
    assert window is not None and window.group(2) == window.group(3) and int(window.group(3)) > 340_000
    assert "earlier" in r.text
    first = site.get(f"/versions/{site.alpha[0]}/log?test=big&offset=0", site.token_a).text
    assert "1\n2\n3\n" in first and "END-OF-BIG-LOG" not in first and "later" in first
    # the log of gamma's `marker` is lost from the store: its page says so
    s = Session.open(site.settings)
    path = queries.log_path(s, site.gamma, "marker")
    s.close()
    assert "good-g" in path.read_text()
    path.unlink()
    r = site.get(f"/versions/{site.gamma}/log?test=marker")
    assert r.status_code == 200 and "is missing from the store" in r.text


def test_artifacts_download_from_the_version_page_as_stored(site: Site) -> None:
    page = site.get(f"/versions/{site.gamma}").text
    links = re.findall(r'href="(/versions/[^"]+/artifacts/([^"]+))" download', page)
    assert "rootfs.tar" in [name for _href, name in links]
    for href, _name in links:
        r = site.get(href)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == r.headers["etag"].strip('"')  # the bytes the store holds
    assert site.get(f"/versions/{site.gamma}/artifacts/nosuch.tar").status_code == 404


def test_a_token_sees_its_namespace_and_anonymous_sees_public_only(site: Site) -> None:
    mine = site.get("/", site.token_a).text
    assert "/products/alpha" in mine and "/products/gamma" in mine and "/products/beta" not in mine
    anon = site.get("/").text
    assert "/products/gamma" in anon and "/products/alpha" not in anon and "/products/beta" not in anon
    for path in (f"/versions/{site.beta}", "/products/beta", "/history/beta?test=check"):
        assert site.get(path, site.token_a).status_code == 404  # as if it did not exist
    assert site.get(f"/versions/{site.alpha[0]}").status_code == 404  # anonymous: private
    flaky = site.get("/flaky", site.token_a).text
    assert "beta@" not in flaky and "flappy" in flaky and "1: " in flaky  # failed at attempt 1, then passed
    assert "flappy" not in site.get("/flaky").text  # anonymous: alpha is private


def test_forms_need_their_csrf_token_and_the_same_origin(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as browser:
        login = browser.post("/login", data={"token": site.token_a})
        assert login.status_code == 303 and "imageci_token" in browser.cookies
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = browser.get(f"/versions/{site.alpha[0]}").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        target = f"/versions/{site.alpha[0]}/promote"
        refused = browser.post(target, data={"reason": "x"})  # no token
        assert refused.status_code == 403 and "CSRF" in refused.text
        refused = browser.post(target, data={"reason": "x", "csrf": "0" * 64})
        assert refused.status_code == 403
        refused = browser.post(target, data={"reason": "x", "csrf": csrf.group(1)},
                               headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403 and "another site" in refused.text
        assert "→ stable" not in browser.get(f"/versions/{site.alpha[0]}").text
        done = browser.post(target, data={"reason": "reviewed on the dashboard", "csrf": csrf.group(1)},
                            headers={"Origin": site.url})
        assert done.status_code == 303, done.text
        after = browser.get(done.headers["location"]).text
        assert "promoted alpha@" in after and "testing → stable" in after and "reviewed on the dashboard" in after
        assert "by alice" in after
        # the next version's page says what changed inside since this one passed
        since = browser.get(f"/versions/{site.alpha[1]}").text
        section = since[since.index('id="since-h"'):since.index('id="runs-h"')]
        assert f"Since <a href=\"/versions/{site.alpha[0]}\">{site.alpha[0]}</a>" in section, section
        assert "<code>/etc/imageci-marker</code></th><td>changed</td>" in section and "6 → 5" in section, section
        elsewhere = browser.post("/login", data={"token": site.token_a}, headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403
        bad = browser.post("/login", data={"token": "ici_nope"})
        assert bad.status_code == 401 and "unknown token" in bad.text


def test_quarantine_from_the_dashboard_with_a_note_and_lifting_it(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=30, follow_redirects=False) as browser:
        assert browser.post("/login", data={"token": site.token_a}).status_code == 303
        page = browser.get("/flaky").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None and 'action="/quarantine"' in page and "<option>alpha</option>" in page
        assert "<option>gamma</option>" not in page  # team-a may not quarantine team-b's tests
        form = {"product": "alpha", "test": "check", "testbeds": "sandbox", "tracker": "https://bugs.example.org/42",
                "expires": "2099-12-31", "mode": "warn", "reason": "the marker moved; see the tracker"}
        assert browser.post("/quarantine", data=form).status_code == 403  # no CSRF token
        assert "blocked" in browser.get(f"/versions/{site.alpha[1]}").text
        done = browser.post("/quarantine", data={**form, "csrf": csrf.group(1)})
        assert done.status_code == 303, done.text
        listed = browser.get(done.headers["location"]).text
        assert "quarantined check on alpha until 2099-12-31" in listed and "the marker moved" in listed
        assert "added by alice" in listed
        version = browser.get(f"/versions/{site.alpha[1]}").text
        assert "gate holds" in version  # check ran; its failure only warns now
        entry = re.search(r'action="/quarantine/(\d+)/lift"', listed)
        assert entry is not None
        refused = browser.post(f"/quarantine/{entry.group(1)}/lift", data={"csrf": "nope"})
        assert refused.status_code == 403
        lifted = browser.post(f"/quarantine/{entry.group(1)}/lift", data={"csrf": csrf.group(1), "reason": "fixed"})
        assert lifted.status_code == 303
        assert "lifted by alice" in browser.get("/flaky").text
        assert "blocked" in browser.get(f"/versions/{site.alpha[1]}").text
    api = httpx.post(f"{site.url}/api/v1/quarantine", headers={"Authorization": f"Bearer {site.token_a}"},
                     json={**{k: v for k, v in form.items() if k != "testbeds"}, "product": "gamma"})
    assert api.status_code == 403 and "promote" in api.json()["error"]  # gamma is team-b's


def test_the_local_dashboard_is_read_only_on_loopback(site: Site) -> None:
    refused = site.cli("dashboard", "--listen", "0.0.0.0:0")
    assert refused.returncode == 2 and "loopback only" in refused.stderr + refused.stdout
    proc = subprocess.Popen([*IMAGECI, "dashboard", "--listen", "127.0.0.1:0"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**{k: v for k, v in os.environ.items() if k != "IMAGECI_DB_URL"},
                                 "IMAGECI_HOME": str(site.home)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url is not None, line
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(url.group(0), timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert page.status_code == 200
        assert all(f"/products/{n}" in page.text for n in ("alpha", "beta", "gamma"))  # no token: every product
        assert "read-only" in page.text and 'action="/versions' not in httpx.get(
            f"{url.group(0)}versions/{site.alpha[1]}").text  # no promotion form
        post = httpx.post(f"{url.group(0)}versions/{site.alpha[1]}/promote", data={"reason": "x", "csrf": "x"})
        assert post.status_code == 403 and "read-only" in post.text
        assert httpx.get(f"{url.group(0)}api/v1/images").status_code == 404  # the API is not served
    finally:
        proc.terminate()
        proc.wait(timeout=30)
