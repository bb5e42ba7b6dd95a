"""The report page's escaping and checks, without Spark or a browser (those are in
``integration/test_report.py``)."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from fwpolicy.config import ConfigError
from fwpolicy.review.report import ReportData, check_destination, render, script_json

HOSTILE = ["</script><script>alert(1)</script>", "<!--", "a\u2028b", '" onerror="x', "&amp;"]


def test_script_json_cannot_end_its_block_and_reads_back():
    text = script_json({"v": HOSTILE})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"v": HOSTILE}


def test_dates_and_times_become_text():
    when = dt.datetime(2026, 8, 1, 12, 30)
    assert json.loads(script_json([dt.date(2026, 8, 1), when])) == ["2026-08-01", "2026-08-01 12:30:00"]


def test_a_page_keeps_every_value_out_of_its_markup():
    row = {"Directionality": "Outbound", "AliasPath": HOSTILE[0], "DistinctMachines": 3, "Ports": [443]}
    data = ReportData(
        window_start=dt.date(2026, 8, 1),
        window_end=dt.date(2026, 8, 8),
        policy=[row],
        changes=None,
        previous_window_end=None,
        hunting=[{**row, "Score": 3, "Reasons": ["public_folder"], "ExamplePath": HOSTILE[3]}],
        audit={"rows_read": 10, "rows_outbound": 9, "removed": {"loopback": 1}, "command": "<b>run</b>"},
    )
    page = render(data)
    assert page.count("<script") == 3 and "alert(1)" not in page.split('id="report-data">')[0]
    block = re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(block)["policy"][0]["AliasPath"] == HOSTILE[0]
    assert "<b>run</b>" not in page and "&lt;b&gt;run&lt;/b&gt;" in page
    assert "no policy_changes table" in page


def test_destination_folder_must_exist(tmp_path):
    assert check_destination(tmp_path / "r.html") == tmp_path / "r.html"
    with pytest.raises(ConfigError, match="does not exist"):
        check_destination(tmp_path / "missing" / "r.html")
    with pytest.raises(ConfigError, match="is a folder"):
        check_destination(tmp_path)
