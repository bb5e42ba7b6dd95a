"""``--catalog``: tables registered by name at their paths, idempotently; clashes and bad names
refused before any work. In the test session's in-memory catalog; the Hive metastore across
processes is ``tests/slow/test_catalog_hive.py``."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from fwpolicy.cli import main
from fwpolicy.io.catalog import check_registrations, register

from helpers import event, events_df

TABLES = {"firewall_policy", "unusual_programs", "excluded_connections", "policy_changes", "run_audit"}


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("catalog") / "lake"
    rows = [event(DeviceId=f"dev-{d}", RemoteIP=f"20.0.0.{d}") for d in range(3)]
    events_df(spark, rows).withColumn("EventDate", F.to_date("Timestamp")).write.partitionBy(
        "EventDate"
    ).parquet(str(path))
    return path


def run(lake, out, schema):
    argv = ["-q", "run", "--source", str(lake), "--source-format", "parquet", "--output", str(out)]
    return main([*argv, "--start", "2026-08-01", "--end", "2026-08-02", "--catalog", schema])


@pytest.fixture(scope="module")
def registered(lake, tmp_path_factory):
    """One run registered in schema fw_catalog_a: its output root, and what it printed."""
    out = tmp_path_factory.mktemp("registered") / "out"
    return out


@pytest.mark.slow  # runs into a catalog: the suite's time budget
def test_tables_are_registered_at_their_paths_and_a_rerun_is_fine(spark, lake, registered, capsys):
    out = registered
    assert run(lake, out, "fw_catalog_a") == 0
    assert "5 tables registered" in capsys.readouterr().out
    names = {r["tableName"] for r in spark.sql("SHOW TABLES IN fw_catalog_a").collect()}
    assert names == TABLES
    by_name = spark.table("fw_catalog_a.firewall_policy")
    by_path = spark.read.format("delta").load(str(out / "firewall_policy"))
    assert sorted(map(tuple, by_name.collect())) == sorted(map(tuple, by_path.collect())) != []
    # Registering again (what a rerun does after its writes) adds nothing and does not fail.
    tables = {name: str(out / name) for name in TABLES}
    check_registrations(spark, "fw_catalog_a", tables)
    assert register(spark, "fw_catalog_a", tables) == []


@pytest.mark.slow  # it needs the registered run
def test_a_name_registered_elsewhere_is_refused_before_any_work(lake, registered, tmp_path, capsys):
    if not (registered / "firewall_policy").exists():
        assert run(lake, registered, "fw_catalog_a") == 0  # run alone: register first
    capsys.readouterr()
    other = tmp_path / "second"
    assert run(lake, other, "fw_catalog_a") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is registered at" in err[0] and str(registered) in err[0]
    assert not other.exists()


@pytest.mark.parametrize("schema", ["fw;drop", "a.b.c", "1abc", "fw-x", "fw catalog", "`fw`"])
def test_illegal_schema_names_are_refused_in_one_line(lake, tmp_path, capsys, schema):
    out = tmp_path / "out"
    assert run(lake, out, schema) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fwpolicy: error: --catalog") and not out.exists()
