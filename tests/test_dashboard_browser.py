"""The web dashboard in Debian's headless Chromium driven through Selenium with Debian's chromium-driver:
every page type, narrow screens, keyboard, local times, a run followed live. Screenshots of every page
type are kept in ``out/dashboard-screenshots/`` (or ``$IMAGECI_SCREENSHOTS``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from imageci.store.catalog import Catalog

from conftest import IMAGECI, REPO, require_tool, write_suite
from dashkit import CHECK_FAILS, SHOTS, Site

pytestmark = pytest.mark.root  # the seeding runs are real sandbox runs


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
    # its own temporary directory, removed afterwards (not its org.chromium.* left in the host's /tmp); a short
    # path: Chromium puts a socket there, and the tests' own directories are too deep for a socket's address
    tmp = tempfile.mkdtemp(prefix="imageci-chromium-")
    service = Service(executable_path=shutil.which("chromedriver") or "",
                      env={**os.environ, "TZ": "Asia/Tokyo", "TMPDIR": tmp})
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp, ignore_errors=True)


def _shot(driver: object, name: str) -> None:
    assert driver.save_screenshot(str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]


def _follow(driver: object, element: object) -> None:
    """Click a link or button that loads another page, and wait until it has."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")  # type: ignore[attr-defined]
    element.click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 30).until(_gone(old))  # type: ignore[type-var]


def _gone(old: object) -> Callable[[object], bool]:
    """Selenium's ``staleness_of``, and a node caught while its page is being replaced: chromedriver then answers
    "Node with given id does not belong to the document" instead of a stale element (seen once under load)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def check(_driver: object) -> bool:
        try:
            old.is_enabled()  # type: ignore[attr-defined]
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


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
