"""The web dashboard, served by a real `imageci serve` (and `imageci dashboard`) on
127.0.0.1 over a catalog seeded by real runs in the sandbox, read by real HTTP
clients and by Debian's headless Chromium driven through Selenium with Debian's
chromium-driver. Screenshots of every page type are kept in
``out/dashboard-screenshots/`` (or ``$IMAGECI_SCREENSHOTS``)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from imageci.app import queries, tokens
from imageci.app.access import LOCAL
from imageci.app.session import Session
from imageci.config import Settings
from imageci.store.catalog import Catalog
from imageci.store.models import Attempt
from imageci.store.states import utcnow

from conftest import IMAGECI, REPO, busybox_rootfs, free_port, require_tool, write_suite

pytestmark = pytest.mark.root  # the seeding runs are real sandbox runs

APPLETS = ("sh", "cat", "true", "sleep", "grep", "echo", "printf", "seq", "test", "[")
SHOTS = Path(os.environ.get("IMAGECI_SCREENSHOTS", REPO / "out" / "dashboard-screenshots"))
CHECK_FAILS = "expected the good marker, found a bad one"


@dataclass
class Site:
    url: str
    home: Path
    settings: Settings
    alpha: list[str]  # alpha@SERIAL, oldest first (namespace team-a)
    beta: str  # beta@SERIAL (namespace team-b, private)
    gamma: str  # gamma@SERIAL (namespace team-b, public)
    token_a: str  # read + promote in team-a
    suite: Path

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "IMAGECI_HOME": str(self.home)}
        env.pop("IMAGECI_DB_URL", None)
        return subprocess.run([*IMAGECI, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def get(self, path: str, token: str | None = None, **kw: object) -> httpx.Response:
        headers = {"Accept": "text/html", **({"Authorization": f"Bearer {token}"} if token else {})}
        return httpx.get(self.url + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def _serve(home: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "IMAGECI_HOME": str(home)}
    env.pop("IMAGECI_DB_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "imageci.cli", *args, "--listen", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=open(home / f"{args[0]}.log", "wb"))  # noqa: SIM115
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/", timeout=2).status_code in (200, 401):
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (home / f"{args[0]}.log").read_text()
        assert time.monotonic() < deadline, "the server did not answer within 60 s"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """alpha (team-a) v1 passes everything, v2 fails `check`; beta (team-b, private); gamma (team-b, public).
    Every result comes from a real sandbox run."""
    base = tmp_path_factory.mktemp("dash")
    home = base / "home"
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'catalog.db'}", jobs=1, build_cache=None)
    settings.ensure()
    suite = write_suite(base / "suite", {
        "check.sh": f"#!/bin/sh\ngrep -q good /etc/imageci-marker || {{ echo '{CHECK_FAILS}' >&2; exit 1; }}\n",
        "colours.sh": "#!/bin/sh\nprintf '\\033[1;31mred and bold\\033[0m plain \\033[32mgreen\\033[0m\\n'\n",
        "<script>.sh": "#!/bin/sh\necho '<b>not bold</b><script>window.pwned=1</script>'\n",
        "big.sh": "#!/bin/sh\nseq 1 60000\necho END-OF-BIG-LOG\n",
        "marker.sh": "#!/bin/sh\ncat /etc/imageci-marker\n",  # a log of each version's own
    })
    site = Site("", home, settings, [], "", "", "", suite)
    for name, marker in (("alpha", "good-1"), ("alpha", "bad-2"), ("beta", "good-b"), ("gamma", "good-g")):
        tar = busybox_rootfs(base / f"{name}-{marker}.tar", marker, APPLETS)
        done = site.cli("import", name, str(tar), "--suite", str(suite))  # its gate: every test on the sandbox
        assert done.returncode == 0, done.stdout + done.stderr
        serial = Catalog.open(settings.db_url)
        ref = f"{name}@{serial.versions(name)[-1].serial}"
        serial.close()
        done = site.cli("test", ref, "--testbed", "sandbox")
        assert done.returncode in (0, 1), done.stdout + done.stderr
        if name == "alpha":
            site.alpha.append(ref)
        else:
            setattr(site, name, ref)
    cat = Catalog.open(settings.db_url)  # a transient failure, as a worker records one: failed, then passed
    v = cat.resolve(site.alpha[1])
    run = cat.start_run(v.digest, v.id, {"tests": ["flappy"], "testbeds": ["sandbox"], "retries": 1})
    for n, verdict in enumerate(("fail", "pass"), 1):
        now = utcnow()
        cat.record_attempt(Attempt(run_id=run, image_digest=v.digest, test_id="flappy", test_digest="x",
                                   testbed="sandbox", attempt=n, started_at=now, ended_at=now,
                                   exit_code=0 if verdict == "pass" else 1, verdict=verdict, reason=""))
    cat.finish_run(run, 0)
    cat.close()
    for name, namespace, public in (("alpha", "team-a", False), ("beta", "team-b", False), ("gamma", "team-b", True)):
        args = ["product", name, "--namespace", namespace, "--public" if public else "--private"]
        assert site.cli(*args).returncode == 0
    s = Session.open(settings)
    site.token_a = tokens.create(s, "alice", "team-a", "read,promote", by=LOCAL).secret
    s.close()
    proc, site.url = _serve(home, "serve")
    try:
        yield site
    finally:
        _stop(proc)


# --- plain HTTP: statuses, escaping, access, forms ------------------------------------------------------------


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


# --- a real browser --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    require_tool(shutil.which("chromium") is not None, "chromium")
    require_tool(shutil.which("chromedriver") is not None, "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--lang=de-DE"):
        options.add_argument(arg)
    service = Service(executable_path=shutil.which("chromedriver") or "", env={**os.environ, "TZ": "Asia/Tokyo"})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: object, name: str) -> None:
    assert driver.save_screenshot(str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def _follow(driver: object, element: object) -> None:
    """Click a link or button that loads another page, and wait until it has."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")  # type: ignore[attr-defined]
    element.click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(old))  # type: ignore[arg-type]


def _sign_in(driver: object, site: Site) -> None:
    from selenium.webdriver.common.by import By

    d = driver
    d.delete_all_cookies()  # type: ignore[attr-defined]
    d.get(site.url + "/login")  # type: ignore[attr-defined]
    _shot(d, "login")
    d.find_element(By.ID, "token").send_keys(site.token_a)  # type: ignore[attr-defined]
    _follow(d, d.find_element(By.CSS_SELECTOR, "form.login button"))  # type: ignore[attr-defined]


def test_every_page_type_in_chromium_and_a_failing_cell_leads_to_its_log(site: Site, browser: object) -> None:
    from selenium.webdriver.common.by import By

    d: object = browser
    _sign_in(d, site)
    assert "signed in as" in d.find_element(By.TAG_NAME, "header").text  # type: ignore[attr-defined]
    body = d.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
    assert "alpha" in body and "gamma" in body and "beta" not in body  # namespace A never shows B's private
    _shot(d, "overview")
    # overview → the testing version of alpha → its failing cell → the log says why (two clicks)
    _follow(d, d.find_element(By.LINK_TEXT, site.alpha[1].split("@")[1]))  # type: ignore[attr-defined]
    _shot(d, "version")
    failing = d.find_element(By.CSS_SELECTOR, "td.c-fail a")  # type: ignore[attr-defined]
    assert "fail" in failing.text  # the verdict is a word, not only a colour
    _follow(d, failing)
    _shot(d, "cell")
    assert CHECK_FAILS in d.find_element(By.CSS_SELECTOR, "pre.log").text  # type: ignore[attr-defined]
    assert "<script>" not in d.title  # type: ignore[attr-defined]
    _follow(d, d.find_element(By.LINK_TEXT, "log"))  # type: ignore[attr-defined]
    _shot(d, "log")
    assert CHECK_FAILS in d.find_element(By.CSS_SELECTOR, "pre.log").text  # type: ignore[attr-defined]
    assert d.execute_script("return window.pwned === undefined")  # type: ignore[attr-defined]
    # the test's history: first bad, last good, and the comparison of the two
    d.get(f"{site.url}/history/alpha?test=check")  # type: ignore[attr-defined]
    _shot(d, "history")
    text = d.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    assert f"Failing since {site.alpha[1]}" in text and f"Last good: {site.alpha[0]}" in text
    assert d.find_elements(By.CSS_SELECTOR, "svg.history rect.bar")  # type: ignore[attr-defined]
    _follow(d, d.find_element(By.PARTIAL_LINK_TEXT, "compare last good"))  # type: ignore[attr-defined]
    _shot(d, "compare")
    assert "check" in d.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    files = d.find_element(By.CSS_SELECTOR, "table.files").text  # type: ignore[attr-defined]
    assert "/etc/imageci-marker changed" in files, files  # what changed inside, from the stored file indexes
    for path, name in (("/products/alpha", "product"), ("/flaky", "flaky"), ("/runs/1", "run"),
                       ("/versions/nosuch@1", "not-found")):
        d.get(site.url + path)  # type: ignore[attr-defined]
        _shot(d, name)
        assert "Traceback" not in d.page_source  # type: ignore[attr-defined]
    assert "Not found" in d.find_element(By.TAG_NAME, "h1").text  # type: ignore[attr-defined]


def test_narrow_screens_keyboard_and_local_times(site: Site, browser: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    d: object = browser
    _sign_in(d, site)
    d.set_window_size(360, 800)  # type: ignore[attr-defined]
    try:
        d.get(f"{site.url}/versions/{site.alpha[1]}")  # type: ignore[attr-defined]
        _shot(d, "version-360px")
        assert d.execute_script("return document.documentElement.scrollWidth") <= 360  # type: ignore[attr-defined]
        first = d.find_element(By.CSS_SELECTOR, "table.matrix tbody tr td.cell a")  # type: ignore[attr-defined]
        first.send_keys("")  # focus
        d.execute_script("arguments[0].focus()", first)  # type: ignore[attr-defined]
        first.send_keys(Keys.ARROW_DOWN)
        focused = d.switch_to.active_element  # type: ignore[attr-defined]
        rows = d.find_elements(By.CSS_SELECTOR, "table.matrix tbody tr")  # type: ignore[attr-defined]
        assert focused == rows[1].find_element(By.CSS_SELECTOR, "td.cell a")
        focused.send_keys(Keys.ARROW_UP)
        assert d.switch_to.active_element == first  # type: ignore[attr-defined]
        when = d.find_element(By.CSS_SELECTOR, "time")  # type: ignore[attr-defined]
        assert when.get_attribute("title").endswith("UTC")  # UTC on hover …
        assert "UTC" not in when.text and when.text  # … the reader's locale in the page
    finally:
        d.set_window_size(1280, 900)  # type: ignore[attr-defined]


def test_the_run_page_follows_a_run_without_reloading(site: Site, browser: object) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    d: object = browser
    _sign_in(d, site)
    slow = write_suite(site.suite.parent / "slow", {f"s{i}.sh": "#!/bin/sh\nsleep 2\n" for i in range(4)})
    env = {**{k: v for k, v in os.environ.items() if k != "IMAGECI_DB_URL"}, "IMAGECI_HOME": str(site.home)}
    proc = subprocess.Popen([*IMAGECI, "test", site.alpha[0], "--testbed", "sandbox", "--suite", str(slow), "-j", "1"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        run_id = None
        while run_id is None:
            cat = Catalog.open(site.settings.db_url)
            running = [r for r in cat.runs(cat.resolve(site.alpha[0]).digest) if r.status == "running"]
            cat.close()
            run_id = running[-1].id if running else None
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.2)
        d.get(f"{site.url}/runs/{run_id}")  # type: ignore[attr-defined]
        _shot(d, "run-running")
        assert d.find_element(By.CSS_SELECTOR, ".runstate").get_attribute("data-status") == "running"  # type: ignore[attr-defined]
        d.execute_script("window.sameDocument = true")  # type: ignore[attr-defined]
        seen = set()
        deadline = time.monotonic() + 90
        while True:
            try:  # the script replaces the progress box while we read it
                seen.add(d.find_element(By.CSS_SELECTOR, ".progress-text").text)  # type: ignore[attr-defined]
                status = d.find_element(By.CSS_SELECTOR, ".runstate").get_attribute("data-status")  # type: ignore[attr-defined]
            except StaleElementReferenceException:
                continue
            if status != "running":
                break
            assert time.monotonic() < deadline, "the page did not show the run ending"
            time.sleep(0.3)
        _shot(d, "run-finished")
        assert status == "finished"
        # the last update may change the state and the progress together, between our two reads
        seen.add(d.find_element(By.CSS_SELECTOR, ".progress-text").text)  # type: ignore[attr-defined]
        assert d.execute_script("return window.sameDocument === true")  # type: ignore[attr-defined]
        assert "4 of 4 test × testbed done" in seen and len(seen) >= 2, seen  # it moved while we watched
        assert len(d.find_elements(By.CSS_SELECTOR, "table.results tbody tr")) == 4  # type: ignore[attr-defined]
        sh = httpx.get(f"{site.url}/runs/{run_id}/reproduce.sh", headers={"Authorization": f"Bearer {site.token_a}"})
        assert sh.status_code == 200 and f"--server {site.url} test {site.alpha[0]} --suite" in sh.text
        assert "--testbed sandbox --retries 0" in sh.text and "SUITE=DIR" in sh.text
    finally:
        assert proc.wait(timeout=120) == 0
