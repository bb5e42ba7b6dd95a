"""The whole job on generated data against the pure-Python reference of the KQL query.

One small lake is generated per module (Parquet, date-partitioned) and copied to Delta; the job
runs through its command line, as a user runs it. The run over the Delta copy is written once
per module and shared: compared with the reference, then copied for the rerun test.
"""

from __future__ import annotations

import datetime as dt
import shutil

import pytest
from pyspark.sql import functions as F

from fwpolicy.cli import main
from fwpolicy.config import PolicyConfig
from fwpolicy.io.source import REQUIRED_COLUMNS, read_window
from fwpolicy.query.seed import seed_query
from fwpolicy.tasks.generate import generate_events, write_lake
from plans import partition_count, scan_nodes

from helpers import policy_dict
from kql_reference import reference_policy

START = dt.date(2026, 8, 1)
DAYS = 6
# Two days in the middle of six: pruning and the Timestamp filter both have work to do.
W_START, W_END = START + dt.timedelta(days=2), START + dt.timedelta(days=4)


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    df = generate_events(spark, 24, DAYS, seed=11, start=START, events_per_device_day=25)
    write_lake(df, str(root / "parquet"), "parquet")
    write_lake(spark.read.parquet(str(root / "parquet")), str(root / "delta"), "delta")
    return root


@pytest.fixture(scope="module")
def window_events(spark, lake):
    """The window's events as dicts, for the reference (a few thousand rows)."""
    lo = dt.datetime.combine(W_START, dt.time())
    hi = dt.datetime.combine(W_END, dt.time())
    rows = spark.read.parquet(str(lake / "parquet")).where(
        (F.col("Timestamp") >= lo) & (F.col("Timestamp") < hi)
    )
    return [r.asDict() for r in rows.select(*REQUIRED_COLUMNS).collect()]


def run_cli(lake_path, fmt, out, *extra):
    argv = ["run", "--source", str(lake_path), "--source-format", fmt, "--output", str(out)]
    argv += ["--start", W_START.isoformat(), "--end", W_END.isoformat(), *extra]
    return main(["-q", *argv])


def read_policy(spark, out, window_end=W_END):
    return (
        spark.read.format("delta").load(str(out / "firewall_policy")).where(F.col("window_end") == window_end)
    )


@pytest.fixture(scope="module")
def delta_run(lake, tmp_path_factory):
    """The output root of one run over the Delta copy of the lake (do not write to it)."""
    out = tmp_path_factory.mktemp("delta-run")
    assert run_cli(lake / "delta", "delta", out) == 0
    return out


@pytest.mark.parametrize("fmt", ["parquet", "delta"])
def test_run_matches_the_reference(spark, lake, window_events, delta_run, tmp_path, fmt):
    if fmt == "delta":
        out = delta_run
    else:
        out = tmp_path
        assert run_cli(lake / fmt, fmt, out) == 0
    got = policy_dict(read_policy(spark, out))
    expected = reference_policy(window_events)
    assert len(expected) > 20, "the generated fleet should exercise many programs"
    assert {k for k in expected if k[0] == "Inbound"}, "and both directions"
    assert got == expected


@pytest.mark.slow  # a second run of the lake: the suite's time budget (test_property covers the options)
def test_options_match_the_reference(spark, lake, window_events, tmp_path):
    assert (
        run_cli(
            lake / "parquet",
            "parquet",
            tmp_path,
            "--ephemeral-start",
            "40000",
            "--include-inbound-remote-ips",
        )
        == 0
    )
    got = policy_dict(read_policy(spark, tmp_path))
    assert got == reference_policy(window_events, ephemeral_start=40000, include_inbound_remote_ips=True)


@pytest.mark.slow  # three runs: the suite's time budget
def test_rerun_leaves_the_table_unchanged_and_other_windows_alone(spark, lake, delta_run, tmp_path):
    def snapshot():
        df = spark.read.format("delta").load(str(tmp_path / "firewall_policy"))
        return sorted(tuple(r) for r in df.collect())

    shutil.copytree(delta_run, tmp_path, dirs_exist_ok=True)  # a first run of the window
    other = ["--start", START.isoformat(), "--end", (START + dt.timedelta(days=1)).isoformat()]
    base = ["run", "--source", str(lake / "delta"), "--source-format", "delta", "--output", str(tmp_path)]
    assert main(["-q", *base, *other]) == 0
    first = snapshot()
    assert run_cli(lake / "delta", "delta", tmp_path) == 0
    assert snapshot() == first
    ends = {
        r["window_end"] for r in spark.read.format("delta").load(str(tmp_path / "firewall_policy")).collect()
    }
    assert ends == {W_END, START + dt.timedelta(days=1)}


def test_one_scan_of_the_source_and_partitions_pruned(spark, lake):
    cfg = PolicyConfig()
    events = read_window(spark, str(lake / "parquet"), "parquet", W_START, W_END, cfg.partition_columns)
    # Every step of the query kept, as a run keeps them, but cached rather than checkpointed
    # so that the executed plan still shows the scans under the cached steps.
    kept: list = []

    def keep(df):
        kept.append(df.persist())
        return df

    query = seed_query(events, cfg, (W_START, W_END), keep=keep)
    try:
        policy = query.policy()
        policy.collect()
        scans = scan_nodes(policy)
    finally:
        for df in kept:
            df.unpersist()
    assert len(scans) == 1
    # The window's two days, plus the one-day margin on each side: 4 of the 6 partitions.
    assert partition_count(scans[0]) == 4
    read_schema = scans[0].requiredSchema().fieldNames()
    assert "DeviceName" not in read_schema  # column pruning: unused columns are not read
    assert set(REQUIRED_COLUMNS) <= set(read_schema)
