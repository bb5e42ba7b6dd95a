"""``fwpolicy report``: a self-contained page, checked in Chromium, with hostile values in it.

Two runs over a small fleet whose paths, file names and URLs carry ``<script>``, ``" onerror=``
and ``javascript:`` payloads (``tests/two_windows.py``); the report of the second window is
opened in headless Chromium (``tests/browser.py``): no payload runs, the console has no errors,
the policy table has the table's rows, filtering and sorting work, and a screenshot is not blank.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from PIL import Image

from fwpolicy.cli import main

from browser import chromium
from two_windows import NEW, PAYLOADS


@pytest.fixture(scope="module")
def output(two_windows):
    return two_windows[1]


@pytest.fixture(scope="module")
def page(output):
    to = output / "review.html"
    assert main(["-q", "report", "--output", str(output), "--window-end", "2026-08-06", "--to", str(to)]) == 0
    return to


def test_the_page_is_self_contained_and_no_value_is_markup(page):
    text = page.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # the page may load nothing from anywhere
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text, re.I)
    assert text.count("<script") == 3  # the JSON block, plotly.js, the page's own script
    assert "<script>window.__pwned" not in text and 'onerror="window' not in text
    block = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    data = json.loads(block.group(1))
    assert {r["ExamplePath"] for r in data["policy"]} == {*PAYLOADS, NEW}  # the values, intact
    assert any(NEW.lower() in r["AliasPath"] for r in data["changes"])


def test_unknown_window_and_missing_folder_write_nothing(output, capsys, tmp_path):
    to = tmp_path / "r.html"
    assert main(["-q", "report", "--output", str(output), "--window-end", "2026-08-04", "--to", str(to)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no window_end 2026-08-04" in err[0] and not to.exists()
    missing = tmp_path / "nope" / "r.html"
    assert (
        main(["-q", "report", "--output", str(output), "--window-end", "2026-08-06", "--to", str(missing)])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and not missing.parent.exists()


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def test_in_a_browser_nothing_runs_and_the_tables_are_whole(spark, browser, page, output):
    browser.get(page.as_uri())
    browser.implicitly_wait(5)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    policy = (
        spark.read.format("delta")
        .load(str(output / "firewall_policy"))
        .where("window_end = DATE'2026-08-06'")
    )
    assert (
        browser.execute_script("return document.querySelectorAll('#policy tbody tr').length")
        == policy.count()
    )
    hunting = (
        spark.read.format("delta")
        .load(str(output / "unusual_programs"))
        .where("window_end = DATE'2026-08-06'")
    )
    assert (
        browser.execute_script("return document.querySelectorAll('#hunting tbody tr').length")
        == hunting.count()
    )
    changes = (
        spark.read.format("delta").load(str(output / "policy_changes")).where("window_end = DATE'2026-08-06'")
    )
    assert (
        browser.execute_script("return document.querySelectorAll('#changes tbody tr').length")
        == changes.count()
        > 0
    )
    # The payloads are shown as text, exactly.
    cells = browser.execute_script(
        "return [...document.querySelectorAll('#policy td')].map(td => td.textContent)"
    )
    assert PAYLOADS[0] in cells and any("javascript:" in c for c in cells)
    assert browser.execute_script("return document.querySelectorAll('.js-plotly-plot').length") == 2
    png = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    assert len(png.resize((140, 180)).getcolors(maxcolors=140 * 180)) > 20, "the screenshot is blank"
    # Filtering and sorting work on the same rows.
    box = browser.find_element("id", "policy-filter")
    box.send_keys("\\app\\app.exe")  # one program: C:\Program Files\App\app.exe
    assert browser.execute_script("return document.querySelectorAll('#policy tbody tr').length") == 1
    assert browser.find_element("id", "policy-shown").text == f"1 of {policy.count()}"
    browser.execute_script("arguments[0].value = ''; arguments[0].dispatchEvent(new Event('input'))", box)
    assert browser.find_element("id", "policy-shown").text == f"{policy.count()} of {policy.count()}"
    header = next(
        th for th in browser.find_elements("css selector", "#policy th") if th.text == "ConnectionCount"
    )
    header.click()  # numbers sort largest first
    column = [th.text for th in browser.find_elements("css selector", "#policy th")].index("ConnectionCount")
    counts = browser.execute_script(
        f"return [...document.querySelectorAll('#policy tbody tr')].map(tr => Number(tr.cells[{column}].textContent))"
    )
    expected = sorted((r["ConnectionCount"] for r in policy.collect()), reverse=True)
    assert counts[: len(expected)] == expected
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
