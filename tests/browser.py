"""Headless Chromium for the page tests (Debian's chromium + chromedriver, driven by Selenium)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
CHROMEDRIVER = shutil.which("chromedriver") or shutil.which("chromedriver", path="/usr/bin")


def headless_chromium(profile: Path, monkeypatch, window: str, console_log: bool = False) -> Iterator:
    """A fixture body: yields a Selenium driver of a fresh headless Chromium (profile in `profile`, window
    `window` as "W,H", the browser console kept for `get_log` with `console_log`), and quits it after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from tests.conftest import skip_unless_ci

    if CHROMIUM is None or CHROMEDRIVER is None:
        skip_unless_ci("no chromium or chromedriver (Debian's chromium and chromium-driver; .ci/run installs them)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={window}",
                "--disable-background-networking", "--disable-component-update", "--no-first-run",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
