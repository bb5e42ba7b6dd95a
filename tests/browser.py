"""Headless Chromium for the report's browser tests: Debian's ``chromium`` driven through
``chromium-driver`` by Selenium, with no download of any browser or driver.

Without them the tests skip and say how to install them; where ``CI`` is set they fail instead,
so CI (whose ``.ci/run`` installs both) always runs them.
"""

from __future__ import annotations

import os
import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver", "chromium-driver")


def find(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/lib/chromium/{name}" if os.path.exists(f"/usr/lib/chromium/{name}") else None
        )
        if found:
            return found
    return None


def chromium():
    """A headless Chromium WebDriver with the page's console log kept; skip (or fail on CI) without one."""
    browser, driver = find(BROWSERS), find(DRIVERS)
    if browser is None or driver is None:
        why = "Chromium and its driver are not installed (apt install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must run the browser tests")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)
