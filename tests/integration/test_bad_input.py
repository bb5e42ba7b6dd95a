"""Bad input ends with a clear message and a non-zero exit, and writes nothing."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from fwpolicy.cli import main
from fwpolicy.config import PolicyConfig
from fwpolicy.io.source import conform_schema, read_window, widens_parquet
from fwpolicy.query.seed import DEVICE, INBOUND_DETAIL, connection_table, where_clauses

from helpers import NOON, event, events_df


def run_args(source, out, fmt="parquet", start="2026-08-01", end="2026-08-02"):
    return [
        "run",
        "--source",
        str(source),
        "--source-format",
        fmt,
        "--output",
        str(out),
        "--start",
        start,
        "--end",
        end,
    ]


def test_missing_source(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(run_args(missing, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert f"source not found: {missing}" in err
    assert not (tmp_path / "out").exists()


def test_missing_columns_are_named(spark, tmp_path, capsys):
    src = tmp_path / "src"
    events_df(spark, [event()]).drop("RemoteIPType", "LocalPort").write.parquet(str(src))
    assert main(run_args(src, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "lacks required column(s) RemoteIPType, LocalPort" in err and str(src) in err
    assert not (tmp_path / "out").exists()


def test_unsafe_type_is_named(spark, tmp_path, capsys):
    src = tmp_path / "src"
    events_df(spark, [event()]).withColumn("LocalPort", F.array(F.col("LocalPort"))).write.parquet(str(src))
    assert main(run_args(src, tmp_path / "out")) == 2
    assert "column LocalPort has type array<int>, expected int" in capsys.readouterr().err


def test_wrong_format_is_a_clear_error(spark, tmp_path, capsys):
    src = tmp_path / "src"
    events_df(spark, [event()]).write.parquet(str(src))
    assert main(run_args(src, tmp_path / "out", fmt="delta")) == 2
    assert "cannot read delta source" in capsys.readouterr().err


def test_empty_window_and_bad_dates(tmp_path, capsys):
    assert main(run_args(tmp_path, tmp_path / "out", start="2026-08-02", end="2026-08-02")) == 2
    assert "empty window" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(run_args(tmp_path, tmp_path / "out", start="2026-13-01"))
    assert exc.value.code == 2
    assert "not a date" in capsys.readouterr().err


def test_output_inside_source_is_refused(spark, tmp_path, capsys):
    src = tmp_path / "src"
    events_df(spark, [event()]).write.parquet(str(src))
    assert main(run_args(src, src / "out")) == 2
    assert "inside the source" in capsys.readouterr().err
    assert not (src / "out").exists()


def test_bad_config_file_names_the_file_and_key(tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text("ephemeral_starts: 1\n")
    assert main([*run_args(tmp_path, tmp_path / "o"), "--conf", str(conf)]) == 2
    err = capsys.readouterr().err
    assert str(conf) in err and "ephemeral_starts" in err


@pytest.fixture(params=[True, False], ids=["ansi", "no-ansi"])
def ansi(spark, request):
    yield from _ansi(spark, request.param)


@pytest.fixture(params=[True, pytest.param(False, marks=pytest.mark.slow)], ids=["ansi", "no-ansi"])
def ansi_run(spark, request):
    """As ``ansi``, for whole runs: with ANSI off (Spark 3.5's default) in the slow tier, as
    ``make compat-test`` runs them on Spark 3.5 anyway."""
    yield from _ansi(spark, request.param)


def _ansi(spark, on: bool):
    """Spark 4 runs with ANSI mode on (an invalid cast raises); Spark 3.5 with it off. Every cast
    of source data must be safe under both."""
    before = spark.conf.get("spark.sql.ansi.enabled")
    spark.conf.set("spark.sql.ansi.enabled", str(on).lower())
    yield on
    spark.conf.set("spark.sql.ansi.enabled", before)


def test_safe_casts_and_rejected_values_are_counted(spark, ansi):
    rows = [
        ("2026-08-01T12:00:00Z", "50000", "443"),
        ("2026-08-01T12:00:00.1234567Z", " 50001 ", ""),  # seven digits; '' port is missing
        ("2026-08-01T12:00:00Z", "http", "443"),  # not a number
        ("2026-08-01T12:00:00Z", "70000", "443"),  # out of range
        (None, "50000", "443"),
        ("yesterday", "50000", "443"),
    ]
    base = events_df(spark, [event()]).drop("Timestamp", "LocalPort", "RemotePort")
    df = spark.createDataFrame(rows, "Timestamp string, LocalPort string, RemotePort string").crossJoin(base)
    conformed = conform_schema(df, "mem")
    got = [(r["LocalPort"], r["RemotePort"], r["Rejected"]) for r in conformed.collect()]
    assert got == [
        (50000, 443, None),
        (50001, None, None),
        (None, 443, "port_not_a_number"),
        (70000, 443, "port_out_of_range"),
        (50000, 443, "null_timestamp"),
        (50000, 443, "timestamp_not_parseable"),
    ]
    assert conformed.schema["LocalPort"].dataType.simpleString() == "int"
    assert conformed.schema["Timestamp"].dataType.simpleString() == "timestamp"


def test_a_run_counts_bad_values_in_the_audit_under_either_ansi_mode(spark, ansi_run, tmp_path, capsys):
    rows = [
        ("2026-08-01T12:00:00Z", "50000", "443"),
        ("2026-08-01T12:00:00Z", "http", "443"),
        ("2026-08-01T12:00:00Z", "50000", "99999999999"),
        ("2026-08-01 25:61:00", "50000", "443"),
        ("not a time", "50000", "443"),
    ]
    base = events_df(spark, [event()]).drop("Timestamp", "LocalPort", "RemotePort")
    src = tmp_path / "src"
    spark.createDataFrame(rows, "Timestamp string, LocalPort string, RemotePort string").crossJoin(
        base
    ).write.parquet(str(src))
    assert main(run_args(src, tmp_path / "out")) == 0, capsys.readouterr().err
    audit = spark.read.format("delta").load(str(tmp_path / "out" / "run_audit")).first()
    assert audit["rows_read"] == 5 and audit["rows_outbound"] == 1
    assert audit["rejected"] == {
        "port_not_a_number": 2,
        "timestamp_not_parseable": 2,
    }


def test_every_row_read_is_accounted_for(spark, tmp_path):
    rows = [
        event(),
        event(RemoteIPType="Loopback"),
        event(LocalIP="1.1.1.1", RemoteIP="1.1.1.1"),
        event(RemoteIP="169.254.0.1"),
        event(ActionType="ConnectionFailed"),
        event(LocalPort=80),  # outbound action on a server port with no key: inbound, unmatched
        event(LocalPort=None),  # null port: in neither leg
        event(Timestamp=None),
        event(Timestamp=dt.datetime(2026, 8, 3)),  # outside the window: not read
    ]
    src = tmp_path / "src"
    events_df(spark, rows).withColumn(
        "EventDate", F.to_date(F.coalesce("Timestamp", F.lit(NOON)))
    ).write.partitionBy("EventDate").parquet(str(src))
    events = read_window(spark, str(src), "parquet", dt.date(2026, 8, 1), dt.date(2026, 8, 2))
    conns = connection_table(where_clauses(events, PolicyConfig()))
    once = conns.where(F.col("Facet").isin(DEVICE, INBOUND_DETAIL))  # each event counted once here
    by_fate = {
        r["fate"]: r["n"]
        for r in once.groupBy(F.coalesce("Removed", "Directionality").alias("fate"))
        .agg(F.sum("Connections").alias("n"))
        .collect()
    }
    assert by_fate == {
        "Outbound": 1,
        "Inbound": 1,
        "loopback": 1,
        "local_equals_remote": 1,
        "link_local": 1,
        "action_type": 1,
        "port_range": 1,
        "rejected:null_timestamp": 1,
    }


@pytest.mark.parametrize(
    "column, value, found",
    [
        ("ActionType", 1, "int"),
        ("RemoteIP", 3232235777, "bigint"),
        ("RemoteIPType", True, "boolean"),
    ],
)
def test_a_text_column_of_another_type_is_refused_naming_both_types(
    spark, tmp_path, capsys, column, value, found
):
    # Cast to text, ActionType 1 would match no clause: every row removed, an empty policy, exit 0.
    src = tmp_path / "src"
    events_df(spark, [event()]).withColumn(column, F.lit(value)).write.parquet(str(src))
    assert main(run_args(src, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"column {column} has type {found}, expected string" in err[0]
    assert not (tmp_path / "out").exists()


def test_a_numeric_device_id_is_still_read(spark, tmp_path):
    src = tmp_path / "src"
    events_df(spark, [event()]).withColumn("DeviceId", F.lit(42)).write.parquet(str(src))
    events = read_window(spark, str(src), "parquet", dt.date(2026, 8, 1), dt.date(2026, 8, 2))
    assert [r["DeviceId"] for r in events.select("DeviceId").collect()] == ["42"]


def two_day_lake(spark, root, second_day=None):
    """Two date partitions of events; ``second_day`` rewrites the second day's frame."""
    for day in (1, 2):
        when = dt.datetime(2026, 8, day, 12)
        df = events_df(spark, [event(Timestamp=when), event(Timestamp=when, DeviceId="dev-2")])
        if day == 2 and second_day is not None:
            df = second_day(df)
        df.write.parquet(str(root / f"EventDate=2026-08-0{day}"))
    return root


def test_files_that_disagree_on_a_column_width_are_widened(spark, tmp_path, capsys):
    # Lakes written by different tools drift: RemotePort int32 in one file, int64 (one value out
    # of range) in another. Spark 4 reads both as bigint; Spark 3.5 cannot, and says so in a line.
    def drifted(df):
        wide = F.col("RemotePort").cast("long")
        return df.withColumn("RemotePort", F.when(F.col("DeviceId") == "dev-2", F.lit(2**40)).otherwise(wide))

    src = two_day_lake(spark, tmp_path / "src", drifted)
    code = main(run_args(src, tmp_path / "out", end="2026-08-03"))
    err = capsys.readouterr().err.strip().splitlines()
    if not widens_parquet(spark):
        assert code == 2 and len(err) == 1 and err[0].startswith("fwpolicy: error: source")
        assert "RemotePort" in err[0] and "INT64" in err[0] and "EventDate=2026-08-0" in err[0]
        assert not (tmp_path / "out").exists()
        return
    assert code == 0, err
    policy = spark.read.format("delta").load(str(tmp_path / "out" / "firewall_policy")).collect()
    # Three of the four events are kept (443 from both files); the 2**40 port is rejected.
    assert [(r["ConnectionCount"], r["Ports"]) for r in policy] == [(3, [443])]
    audit = spark.read.format("delta").load(str(tmp_path / "out" / "run_audit")).first()
    assert audit["rejected"] == {"port_out_of_range": 1}


def test_a_corrupt_parquet_file_is_named_in_one_line(spark, tmp_path, capsys):
    src = two_day_lake(spark, tmp_path / "src")
    day = src / "EventDate=2026-08-02"
    victim = sorted(day.glob("*.parquet"))[-1]
    victim.write_bytes(victim.read_bytes()[:40] + b"PAR1")  # the footer's length points nowhere
    (day / f".{victim.name}.crc").unlink()  # no checksum beside it, as on object storage
    assert main(run_args(src, tmp_path / "out", end="2026-08-03")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt Parquet file" in err[0] and victim.name in err[0]
    assert not (tmp_path / "out").exists()
