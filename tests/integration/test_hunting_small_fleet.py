"""Hunting on a small fleet: relative prevalence and the system-folder outlier, each with an
example that fires and one that does not.

A lab of 5 Windows machines and 2 Linux machines, 14 days. In a fleet this small an absolute
"at most 2 machines in a fleet of 20" never fires; relative prevalence and the comparison with
a folder's other programs do.
"""

from __future__ import annotations

import datetime as dt

import pytest

from fwpolicy.config import HuntingSettings, PolicyConfig
from fwpolicy.query.seed import materialized, seed_query
from fwpolicy.review.hunting import unusual_programs

from helpers import event, events_df

START, END = dt.date(2026, 8, 1), dt.date(2026, 8, 15)
WHEN = dt.datetime(2026, 8, 2, 12)
WINDOWS = [f"win-{i}" for i in range(5)]
LINUX = ["lnx-0", "lnx-1"]


def program(path: str, devices: list[str]) -> list[dict]:
    return [event(Timestamp=WHEN, DeviceId=d, InitiatingProcessFolderPath=path) for d in devices]


PROGRAMS = {
    # System32: four components on most machines, one binary under a made-up name on one.
    "svchost": program(r"C:\Windows\System32\svchost.exe", WINDOWS),
    "lsass": program(r"C:\Windows\System32\lsass.exe", WINDOWS),
    "spoolsv": program(r"C:\Windows\System32\spoolsv.exe", WINDOWS[:4]),
    "wuauclt": program(r"C:\Windows\System32\wuauclt.exe", WINDOWS[:3]),  # 3 of the median 4: not far fewer
    "planted": program(r"C:\Windows\System32\svch0st.exe", WINDOWS[:1]),
    # SysWOW64 has only three programs: too few to know what is typical there.
    "wow_a": program(r"C:\Windows\SysWOW64\a.exe", WINDOWS),
    "wow_b": program(r"C:\Windows\SysWOW64\b.exe", WINDOWS),
    "wow_rare": program(r"C:\Windows\SysWOW64\c.exe", WINDOWS[:1]),
    # A product's own folder is not a system folder, however its programs differ.
    "office": program(r"C:\Program Files\Office\outlook.exe", WINDOWS),
    "office_2": program(r"C:\Program Files\Office\winword.exe", WINDOWS),
    "office_3": program(r"C:\Program Files\Office\excel.exe", WINDOWS),
    "office_rare": program(r"C:\Program Files\Office\msaccess.exe", WINDOWS[:1]),
    "everywhere": program(r"C:\Program Files\Agent\agent.exe", WINDOWS),
    # Linux is its own family of 2 machines: a program on 1 of them is rare, on both it is not.
    "linux_rare": program("/opt/tool/tool", LINUX[:1]),
    "linux_common": program("/usr/sbin/chronyd", LINUX),
}
EXPECTED = {
    "planted": ["system_folder_outlier", "low_prevalence"],
    "wow_rare": ["low_prevalence"],
    "office_rare": ["low_prevalence"],
    "linux_rare": ["low_prevalence"],
}


@pytest.fixture(scope="module")
def listed(spark):
    """Program name -> Reasons, for the default settings and for a stricter rare_share."""
    events = events_df(spark, [e for rows in PROGRAMS.values() for e in rows])
    query = seed_query(events, PolicyConfig(), (START, END), keep=materialized)  # two tables read it
    names = {rows[0]["InitiatingProcessFolderPath"].lower(): n for n, rows in PROGRAMS.items()}

    def table(settings: HuntingSettings | None = None) -> dict[str, list[str]]:
        rows = unusual_programs(query, settings).collect()
        return {names[r["ExamplePath"].lower()]: list(r["Reasons"]) for r in rows}

    return {"default": table(), "loose": table(HuntingSettings(rare_share=0.5, outlier_share=0.8))}


def test_a_small_fleet_has_rare_programs_and_a_planted_binary_stands_out(listed):
    assert listed["default"] == EXPECTED


def test_shares_are_settings(listed):
    loose = listed["loose"]
    # rare_share 0.5: up to 2 of the 5 Windows machines; outlier_share 0.8: up to 3 of System32's median 4.
    assert loose["wuauclt"] == ["system_folder_outlier"]
    assert "spoolsv" not in loose  # 4 machines: neither
    assert loose["planted"] == ["system_folder_outlier", "low_prevalence"]
    assert "linux_common" not in loose  # on every machine of its family: never rare
