"""``policy_changes`` and ``fwpolicy diff``: each change type, the caps, the first window, errors.

The rules are checked on hand-written policy rows with hand-written expectations; the job's
table is checked against a plain-Python comparison of the two policy windows it read.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.cli import main
from fwpolicy.config import ChangeSettings, ConfigError, PolicyConfig
from fwpolicy.review.changes import policy_changes

from two_windows import FIRST_END, SECOND_END, WINDOWS

PREVIOUS, END = dt.date(2026, 8, 8), dt.date(2026, 8, 15)
POLICY = T.StructType(
    [
        T.StructField("Directionality", T.StringType()),
        T.StructField("AliasPath", T.StringType()),
        T.StructField("Ports", T.ArrayType(T.IntegerType())),
        T.StructField("PortCount", T.LongType()),
        T.StructField("RemoteIPCount", T.LongType()),
        T.StructField("DistinctMachines", T.LongType()),
        T.StructField("ConnectionCount", T.LongType()),
    ]
)


def program(path, ports=(443,), port_count=None, ips=10, machines=10, conns=100, direction="Outbound"):
    return (direction, path, list(ports), port_count or len(ports), ips, machines, conns)


BEFORE = [
    program("gone.exe", ports=(80, 443), ips=3, machines=4, conns=50),
    program("ports.exe", ports=(80, 443)),
    program("ports.exe", ports=(445,), direction="Inbound"),  # unchanged: no row
    program("ips-small-step.exe", ips=10),
    program("ips-grew.exe", ips=20),
    program("ips-ratio-short.exe", ips=100),
    program("machines-grew.exe", machines=8),
    program("machines-shrank.exe", machines=8),
    program("machines-steady.exe", machines=8),
    # 5 ports, 3 listed: a port above 3 may be there unlisted.
    program("capped.exe", ports=(1, 2, 3), port_count=5),
]
AFTER = [
    program("new.exe", ports=(53, 443), ips=7, machines=2, conns=9),
    program("ports.exe", ports=(80, 8080)),
    program("ports.exe", ports=(445,), direction="Inbound"),
    program("ips-small-step.exe", ips=15),  # 1.5x but only +5
    program("ips-grew.exe", ips=30),  # 1.5x and +10
    program("ips-ratio-short.exe", ips=149),  # +49 but 1.49x
    program("machines-grew.exe", machines=10),  # +2, 25% of 8 is 2
    program("machines-shrank.exe", machines=6),
    program("machines-steady.exe", machines=9),
    program("capped.exe", ports=(1, 2, 4)),  # 4 may have been there; 3 is gone for sure
]


@pytest.fixture(scope="module")
def changes(spark):
    before = spark.createDataFrame(BEFORE, POLICY)
    after = spark.createDataFrame(AFTER, POLICY)
    rows = policy_changes(before, after, PREVIOUS, END).collect()
    return {(r["ChangeType"], r["Directionality"], r["AliasPath"]): r for r in rows}


def test_each_change_type_fires_where_it_should_and_only_there(changes):
    assert set(changes) == {
        ("new_program", "Outbound", "new.exe"),
        ("gone_program", "Outbound", "gone.exe"),
        ("new_ports", "Outbound", "ports.exe"),
        ("gone_ports", "Outbound", "ports.exe"),
        ("remote_ips_grew", "Outbound", "ips-grew.exe"),
        ("machines_grew", "Outbound", "machines-grew.exe"),
        ("machines_shrank", "Outbound", "machines-shrank.exe"),
        ("gone_ports", "Outbound", "capped.exe"),
    }
    assert {(r["PreviousWindowEnd"], r["window_end"]) for r in changes.values()} == {(PREVIOUS, END)}


def test_details_name_what_changed_with_figures_before_and_after(changes):
    def detail(kind, path):
        return changes[(kind, "Outbound", path)]["Detail"]

    assert detail("new_program", "new.exe") == (
        "new: 2 machines, 9 connections, 2 ports (53, 443), 7 remote IPs"
    )
    assert detail("gone_program", "gone.exe") == (
        "gone; was on 4 machines, 50 connections, 2 ports (80, 443), 3 remote IPs"
    )
    assert detail("new_ports", "ports.exe") == "added ports 8080 (ports 2 -> 2)"
    assert detail("gone_ports", "ports.exe") == "removed ports 443 (ports 2 -> 2)"
    assert detail("gone_ports", "capped.exe") == "removed ports 3 (ports 5 -> 3)"
    assert detail("remote_ips_grew", "ips-grew.exe") == "remote IPs 20 -> 30"
    assert detail("machines_shrank", "machines-shrank.exe") == "machines 8 -> 6"


def test_thresholds_come_from_the_settings(spark):
    before = spark.createDataFrame(BEFORE, POLICY)
    after = spark.createDataFrame(AFTER, POLICY)
    loose = ChangeSettings(remote_ips_ratio=1.2, remote_ips_min=5, machines_ratio=0.1, machines_min=1)
    kinds = {
        (r["ChangeType"], r["AliasPath"])
        for r in policy_changes(before, after, PREVIOUS, END, loose).collect()
    }
    assert {("remote_ips_grew", "ips-small-step.exe"), ("remote_ips_grew", "ips-ratio-short.exe")} <= kinds
    assert ("machines_grew", "machines-steady.exe") in kinds


def test_a_first_window_has_no_changes(spark):
    after = spark.createDataFrame(AFTER, POLICY)
    none = policy_changes(None, after, None, END)
    assert none.count() == 0
    assert none.columns == [
        "ChangeType",
        "Directionality",
        "AliasPath",
        "Detail",
        "PreviousWindowEnd",
        "window_end",
    ]


@pytest.mark.parametrize(
    "values",
    [{"remote_ips_ratio": 1}, {"machines_ratio": 1.5}, {"machines_min": 0}, {"typo": 1}, "x"],
)
def test_bad_settings_are_refused(values):
    with pytest.raises(ConfigError, match="changes"):
        PolicyConfig(changes=values)


# ------------------------------------------------------------------------ the job and diff


def policy_rows(spark, out, end):
    df = spark.read.format("delta").load(str(out / "firewall_policy")).where(F.col("window_end") == end)
    return {(r["Directionality"], r["AliasPath"]): r for r in df.collect()}


def test_the_job_writes_what_the_two_windows_differ_by(spark, two_windows):
    _, out = two_windows
    first, second = FIRST_END, SECOND_END
    table = spark.read.format("delta").load(str(out / "policy_changes"))
    assert table.where(F.col("window_end") == first).count() == 0  # the first window: none
    got = {
        (r["ChangeType"], r["Directionality"], r["AliasPath"])
        for r in table.where(F.col("window_end") == second).collect()
    }
    # Programs and ports, compared here in plain Python on the two windows' policy rows.
    before, after = policy_rows(spark, out, first), policy_rows(spark, out, second)
    expected = {("new_program", *k) for k in after.keys() - before.keys()}
    expected |= {("gone_program", *k) for k in before.keys() - after.keys()}
    for k in before.keys() & after.keys():
        b, a = before[k], after[k]
        b_top = max(b["Ports"]) if b["PortCount"] > len(b["Ports"]) else None
        a_top = max(a["Ports"]) if a["PortCount"] > len(a["Ports"]) else None
        if {p for p in set(a["Ports"]) - set(b["Ports"]) if b_top is None or p <= b_top}:
            expected.add(("new_ports", *k))
        if {p for p in set(b["Ports"]) - set(a["Ports"]) if a_top is None or p <= a_top}:
            expected.add(("gone_ports", *k))
    # The data was built to hold each of these (tests/two_windows.py).
    assert {kind for kind, *_ in expected} == {"new_program", "gone_program", "new_ports"}
    kinds = {"new_program", "gone_program", "new_ports", "gone_ports"}
    assert {c for c in got if c[0] in kinds} == expected
    assert {kind for kind, *_ in got} - kinds == {"machines_shrank"}  # 4 machines down to 2
    assert (
        table.where(F.col("window_end") == second).select("PreviousWindowEnd").distinct().collect()[0][0]
        == first
    )


def test_diff_prints_the_same_rows(spark, two_windows, capsys):
    _, out = two_windows
    assert main(["-q", "diff", "--output", str(out), "--window-end", "2026-08-06", "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    table = (
        spark.read.format("delta").load(str(out / "policy_changes")).where(F.col("window_end") == SECOND_END)
    )
    assert body["previous_window_end"] == "2026-08-03"
    assert sorted(tuple(c.values()) for c in body["changes"]) == sorted(
        (r["ChangeType"], r["Directionality"], r["AliasPath"], r["Detail"]) for r in table.collect()
    )
    assert main(["-q", "diff", "--output", str(out), "--window-end", "2026-08-03"]) == 0
    assert "first window" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--window-end", "2026-08-05"], "no window_end 2026-08-05"),
        (["--window-end", "2026-08-06", "--against", "2026-08-01"], "no window_end 2026-08-01"),
        (["--window-end", "2026-08-03", "--against", "2026-08-06"], "must be before"),
    ],
)
def test_diff_refuses_unknown_windows_in_one_line(two_windows, capsys, extra, message):
    _, out = two_windows
    assert main(["-q", "diff", "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fwpolicy: error:") and message in err[0]


@pytest.mark.slow  # a third run: the suite's time budget
def test_a_rerun_writes_the_same_changes(spark, two_windows, tmp_path):
    lake, out = two_windows

    def snapshot():
        df = spark.read.format("delta").load(str(out / "policy_changes"))
        return sorted(tuple(r) for r in df.collect())

    first = snapshot()
    argv = ["-q", "run", "--source", str(lake), "--source-format", "parquet", "--output", str(out)]
    start, end = WINDOWS[1]
    assert main([*argv, "--start", start, "--end", end]) == 0
    assert snapshot() == first
