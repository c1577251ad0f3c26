"""The web catalog in a real headless browser: Debian's Chromium, driven by Selenium through
Debian's chromium-driver. The root page lists every package and its filter narrows the list as
you type; a package page shows every version with its SHA-256, newest first; the download link's
bytes hash to it; a note holding markup renders as text and runs nothing; with JavaScript off the
pages are complete (minus the filter); on a phone nothing overflows. Screenshots of both pages are
saved under ``artifacts/browser/``.

Chromium is installed from the test set-up when missing and running as root (as CI does), once
(a lock file serialises the suite's workers), and not again when it is there.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Workspace, serving
from servers import CACHE, ROOT

ARTIFACTS = ROOT / "artifacts" / "browser"
#: Headless, and quiet towards the outside: this machine's network is closed, and Chromium's own
#: connections (updates, sync, field trials) would only be refused.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
NOTE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & more'


def _installed() -> tuple[str, str] | None:
    browser = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    found = _installed()
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("Chromium is missing, and only root can install it (apt-get install chromium chromium-driver)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".chromium-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed():
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium", "chromium-driver"]
            if subprocess.run(install, env=env, capture_output=True).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
                subprocess.run(install, env=env, capture_output=True, check=True)
    found = _installed()
    assert found, "apt-get installed chromium and chromium-driver, yet they are not on PATH"
    return found


def _driver(chromium: tuple[str, str], profile: Path, *, javascript: bool = True, size: str = "1200,800"):
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium look for drivers online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium[0]
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={size}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service(executable_path=chromium[1]), options=options)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[tuple[str, dict[str, bytes], Workspace]]:
    """A folder registry with a few packages, served by `tychoreg serve`."""
    ws = Workspace(tmp_path / "p", "file", {"tycho": {"backend": "file"}, "file": {"path": str(tmp_path / "reg")}})
    ws.root.mkdir()
    ws.write_config()
    data = {v: os.urandom(1000 + i) for i, v in enumerate(("1.0", "1.1", "2.0"))}
    for name in ("tools-gcc", "tools-clang", "firmware-a", "data-set"):
        ws.ok("init", name, f"{name}.tar.gz")
        ws.ok("push", name, "0.1", str(ws.file(f"{name}.bin", name.encode())), "--promote-latest")
    ws.ok("init", "narf", "narf.tar.gz")
    for version in data:
        ws.ok("push", "narf", version, str(ws.file(f"{version}.bin", data[version])), "--note", f"build {version}")
    ws.ok("push", "narf", "2.1", str(ws.file("n.bin", b"n")), "--note", NOTE)
    data["2.1"] = b"n"
    ws.ok("promote", "narf", "2.0")
    ws.ok("tag", "narf", "1.0", "stable")
    ws.ok("yank", "narf", "1.1", "--reason", "broken <b>build</b>")
    with serving(ws) as server:
        yield server.url, data, ws


def _shown_rows(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#packages tbody tr")
    return [r.get_attribute("data-name") for r in rows if r.is_displayed()]


def test_the_catalog_in_a_browser(chromium, catalog, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, data, ws = catalog
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver = _driver(chromium, tmp_path / "profile")
    try:
        driver.get(url)
        everything = ["data-set", "firmware-a", "narf", "tools-clang", "tools-gcc"]
        assert _shown_rows(driver) == everything
        box = driver.find_element(By.ID, "filter")
        assert box.is_displayed()
        box.send_keys("tools")
        assert _shown_rows(driver) == ["tools-clang", "tools-gcc"]
        box.send_keys("-g")
        assert _shown_rows(driver) == ["tools-gcc"]
        box.send_keys("zzz")
        assert _shown_rows(driver) == []
        assert driver.find_element(By.ID, "none").is_displayed()
        box.clear()
        box.send_keys("ar")  # a fresh search: clear() sends no input event, a key does
        assert _shown_rows(driver) == ["firmware-a", "narf"]
        driver.save_screenshot(str(ARTIFACTS / "root.png"))

        driver.find_element(By.LINK_TEXT, "narf").click()
        assert driver.current_url == url + "narf/index.html"
        listed = {v["version"]: v for v in ws.ok("list-versions", "narf", "--json").json()}
        rows = driver.find_elements(By.CSS_SELECTOR, "#versions tbody tr")
        assert [r.get_attribute("data-version") for r in rows] == ["2.1", "2.0", "1.1", "1.0"]  # newest first
        for row in rows:
            version = row.get_attribute("data-version")
            shown = row.find_element(By.CSS_SELECTOR, "code.sha256").text
            assert shown == listed[version]["sha256"] == hashlib.sha256(data[version]).hexdigest()
            link = row.find_element(By.LINK_TEXT, "download").get_attribute("href")
            with urllib.request.urlopen(link, timeout=30) as resp:  # the link the page gives
                assert hashlib.sha256(resp.read()).hexdigest() == shown
            command = row.find_element(By.CSS_SELECTOR, "code.cmd").text
            assert command == f"tychoreg pull narf --version {version}"
        note = driver.find_element(By.CSS_SELECTOR, "#v-2\\.1 .note")
        assert note.text == NOTE  # shown as text
        assert note.find_elements(By.TAG_NAME, "img") == []
        assert driver.execute_script("return window.__pwned === undefined")
        yanked = driver.find_element(By.CSS_SELECTOR, "#v-1\\.1 .yanked").text
        assert yanked == "yanked: broken <b>build</b>"
        assert "stable" in driver.find_element(By.CSS_SELECTOR, "#v-1\\.0").text
        driver.save_screenshot(str(ARTIFACTS / "package.png"))
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not [e for e in logs if "Content Security Policy" in e.get("message", "")], logs
    finally:
        driver.quit()


def test_without_javascript_and_on_a_phone(chromium, catalog, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    url, _, _ = catalog
    driver = _driver(chromium, tmp_path / "nojs", javascript=False)
    try:
        driver.get(url)
        assert _shown_rows(driver) == ["data-set", "firmware-a", "narf", "tools-clang", "tools-gcc"]
        assert not driver.find_element(By.ID, "filter-box").is_displayed()  # no filter that cannot work
    finally:
        driver.quit()
    phone = _driver(chromium, tmp_path / "phone", size="390,844")
    try:
        for page in (url, url + "narf/"):
            phone.get(page)
            assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        phone.save_screenshot(str(ARTIFACTS / "package-phone.png"))
    finally:
        phone.quit()
