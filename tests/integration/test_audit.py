"""Run audit: every run appends one ``run_audit`` row, and every row read is accounted for.

The source holds one event for each fate an event can have (each removal clause, each
rejection reason, both legs, an inbound event without a server key) and events the window must
not read (another day; an unusable Timestamp in another day's partition), so every count of
the audit row is known exactly. ``rows_read`` is also checked against an independent Spark
count of the source.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy import __version__
from fwpolicy.config import PolicyConfig, RunSpec
from fwpolicy.io.sink import OWNER, OWNER_PROPERTY, table_properties
from fwpolicy.io.source import read_window
from fwpolicy.query.seed import REMOVAL_CLAUSES, materialized, seed_query
from fwpolicy.tasks import run as pipeline_module
from fwpolicy.tasks.audit import (
    AUDIT_SCHEMA,
    AUDIT_TABLE,
    NO_SERVER_KEY,
    AuditCounts,
    audit_counts,
    redact,
    source_snapshot,
)
from fwpolicy.tasks.run import POLICY_TABLE, run

from helpers import EVENT_SCHEMA, NOON, event, events_df

START, END = dt.date(2026, 8, 1), dt.date(2026, 8, 3)
DAY2 = dt.datetime(2026, 8, 2, 9, 30)
SVC = r"C:\Windows\System32\svchost.exe"

# (event, fate): the fate is what the audit must count it as (None: not read at all).
EVENTS = [
    (event(), "Outbound"),
    (event(Timestamp=DAY2, DeviceId="dev-2"), "Outbound"),
    (event(RemotePort=53, RemoteIP="10.0.0.53"), "Outbound"),
    (
        event(
            ActionType="ListeningConnectionCreated",
            LocalPort=3389,
            RemoteIP="",
            RemotePort=0,
            InitiatingProcessFolderPath=SVC,
        ),
        "Inbound",
    ),
    (
        event(
            ActionType="InboundConnectionAccepted",
            LocalPort=3389,
            RemoteIP="198.51.100.7",
            RemotePort=51000,
            InitiatingProcessFolderPath=SVC,
        ),
        "Inbound",
    ),
    (
        event(
            Timestamp=DAY2,
            ActionType="InboundConnectionAccepted",
            LocalPort=3389,
            RemoteIP="198.51.100.8",
            InitiatingProcessFolderPath=SVC,
        ),
        "Inbound",
    ),
    (
        event(LocalPort=80, DeviceId="dev-3"),
        NO_SERVER_KEY,
    ),  # an outbound action on a server port, never listened
    (event(RemoteIPType="Loopback"), "loopback"),
    (event(LocalIP="10.9.9.9", RemoteIP="10.9.9.9"), "local_equals_remote"),
    (event(RemoteIP="169.254.1.1"), "link_local"),
    (event(ActionType="ConnectionFailed"), "action_type"),
    (event(Timestamp=DAY2, ActionType="ConnectionFailed"), "action_type"),
    (event(LocalPort=None), "port_range"),
    (event(LocalPort=70000), "rejected:port_out_of_range"),
    (event(Timestamp=None, _day=START), "rejected:null_timestamp"),  # in the window's partition
    (event(Timestamp=None, _day=dt.date(2026, 7, 20)), None),  # another day's partition
    (event(Timestamp=dt.datetime(2026, 8, 3, 0, 0)), None),  # the window's end is exclusive
    (event(Timestamp=dt.datetime(2026, 7, 31, 23, 59)), None),
]


def expected_counts() -> AuditCounts:
    fates = [f for _, f in EVENTS if f is not None]
    removed = {c: fates.count(c) for c in (*REMOVAL_CLAUSES, NO_SERVER_KEY)}
    rejected = {f.split(":", 1)[1]: fates.count(f) for f in sorted(set(fates)) if f.startswith("rejected:")}
    return AuditCounts(len(fates), removed, rejected, fates.count("Inbound"), fates.count("Outbound"), 0)


def write_source(spark, path) -> None:
    """Date-partitioned Parquet; an event's partition is its Timestamp's day (or ``_day``)."""
    names = [f.name for f in EVENT_SCHEMA.fields]
    rows = [(*(e.get(n) for n in names), e.get("_day") or (e["Timestamp"] or NOON).date()) for e, _ in EVENTS]
    schema = T.StructType([*EVENT_SCHEMA.fields, T.StructField("EventDate", T.DateType())])
    spark.createDataFrame(rows, schema).write.partitionBy("EventDate").parquet(str(path))


def source_files(path) -> int:
    """Data files of the whole source (not only the window's)."""
    return len(list(path.rglob("*.parquet")))


def independent_count(spark, path) -> int:
    """Source rows with Timestamp in [START, END), plus those with no Timestamp in the window's
    partitions: straight from the files, without fwpolicy's reader."""
    raw = spark.read.parquet(str(path))
    lo, hi = dt.datetime.combine(START, dt.time()), dt.datetime.combine(END, dt.time())
    in_window = (F.col("Timestamp") >= F.lit(lo)) & (F.col("Timestamp") < F.lit(hi))
    unusable = (
        F.col("Timestamp").isNull() & (F.col("EventDate") >= F.lit(START)) & (F.col("EventDate") < F.lit(END))
    )
    return raw.where(in_window | unusable).count()


@pytest.fixture(scope="module")
def source(spark, tmp_path_factory):
    path = tmp_path_factory.mktemp("audit") / "src"
    write_source(spark, path)
    return path


def test_a_run_appends_one_balanced_row(spark, source, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fwpolicy")
    spec = RunSpec(str(source), "parquet", str(tmp_path / "out"), START, END, PolicyConfig())
    first = run(spec, spark)
    audit = spark.read.format("delta").load(str(tmp_path / "out" / AUDIT_TABLE))
    rows = {r["run_id"]: r for r in audit.collect()}  # one row
    assert set(rows) == {first.run_id}

    expected = expected_counts()
    assert expected.balanced
    assert first.audit == expected
    policy_rows = spark.read.format("delta").load(str(tmp_path / "out" / POLICY_TABLE)).count()
    assert first.rows_written == policy_rows == 2  # svchost in, app out
    row = rows[first.run_id]
    assert row["rows_read"] == expected.rows_read == independent_count(spark, source) == 15
    assert dict(row["removed"]) == expected.removed
    assert dict(row["rejected"]) == expected.rejected == {"null_timestamp": 1, "port_out_of_range": 1}
    assert (row["rows_inbound"], row["rows_outbound"], row["rows_excluded"]) == (3, 3, 0)
    parts = sum(row["removed"].values()) + sum(row["rejected"].values())
    assert row["rows_read"] == parts + row["rows_inbound"] + row["rows_outbound"] + row["rows_excluded"]
    assert row["rows_written"] == policy_rows
    assert (row["command"], row["status"], row["profile"]) == ("run", "succeeded", "kql")
    assert (row["window_start"], row["window_end"]) == (START, END)
    assert (row["source"], row["source_format"], row["source_version"]) == (str(source), "parquet", None)
    assert row["source_files"] == source_files(source)
    assert row["config_hash"] == PolicyConfig().digest() and row["fwpolicy_version"] == __version__
    assert row["duration_seconds"] > 0 and row["started_at"] is not None

    assert audit.schema == AUDIT_SCHEMA
    assert table_properties(spark, str(tmp_path / "out" / AUDIT_TABLE)).get(OWNER_PROPERTY) == OWNER
    summaries = [r for r in caplog.records if r.getMessage().startswith(f"run_audit {first.run_id} ")]
    assert len(summaries) == 1 and summaries[0].levelno == logging.INFO
    assert "read 15 rows -> inbound 3, outbound 3, excluded 0" in summaries[0].getMessage()


@pytest.mark.slow  # a second run of the window
def test_a_rerun_appends_a_second_row_and_each_commit_carries_its_run_id(spark, source, tmp_path):
    spec = RunSpec(str(source), "parquet", str(tmp_path / "out"), START, END, PolicyConfig())
    first, second = run(spec, spark), run(spec, spark)
    audit = spark.read.format("delta").load(str(tmp_path / "out" / AUDIT_TABLE))
    rows = {r["run_id"]: r for r in audit.collect()}  # two rows
    assert set(rows) == {first.run_id, second.run_id} and first.run_id != second.run_id
    assert first.audit == expected_counts() == second.audit
    assert first.rows_written == second.rows_written == 2
    # The first run creates the table with its rows (one CREATE TABLE AS SELECT commit), the
    # second replaces its partition; each commit carries its run's id.
    history = DeltaTable.forPath(spark, str(tmp_path / "out" / POLICY_TABLE)).history().collect()
    commits = sorted((h["version"], h["operation"], h["userMetadata"]) for h in history)
    assert commits == [
        (0, "CREATE TABLE AS SELECT", f"fwpolicy run {first.run_id}"),
        (1, "WRITE", f"fwpolicy run {second.run_id}"),
    ]


def test_counts_cover_excluded_rows_and_direct_frames(spark):
    """``audit_counts`` on an in-memory query with exclude rules: excluded rows are
    counted once, after the server-key join (as the policy drops them), and still balance."""
    rows = [e for e, f in EVENTS if f is not None and "rejected" not in f]
    events = events_df(spark, rows)
    excluded = F.when(F.col("RemotePort") == 53, F.lit("dns")).when(F.col("LocalPort") == 3389, F.lit("rdp"))
    cfg = PolicyConfig()
    query = seed_query(events, cfg, (START, END), excluded=excluded, keep=materialized)  # as a run keeps it
    counts = audit_counts(query)
    assert counts.balanced
    assert (counts.rows_read, counts.rows_inbound, counts.rows_outbound, counts.rows_excluded) == (
        13,
        0,
        2,
        4,
    )
    assert counts.removed[NO_SERVER_KEY] == 1 and counts.rejected == {}


def test_delta_source_version_and_files(spark, source, tmp_path):
    path = str(tmp_path / "delta-src")
    raw = spark.read.parquet(str(source))
    raw.write.format("delta").partitionBy("EventDate").save(path)
    raw.limit(1).write.format("delta").mode("append").save(path)  # version 1
    events = read_window(spark, path, "delta", START, END)
    version, files = source_snapshot(spark, path, "delta", events)
    assert version == 1
    assert files == source_files(tmp_path / "delta-src")


def test_a_failed_run_leaves_a_failed_row(spark, source, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure while computing")

    monkeypatch.setattr(pipeline_module, "unusual_programs", boom)  # inside the writing step
    spec = RunSpec(str(source), "parquet", str(tmp_path / "out"), START, END, PolicyConfig())
    with pytest.raises(RuntimeError, match="simulated failure"):
        run(spec, spark)
    (row,) = spark.read.format("delta").load(str(tmp_path / "out" / AUDIT_TABLE)).collect()
    assert row["status"] == "failed" and row["rows_read"] is None and row["rows_written"] is None
    assert not (tmp_path / "out" / POLICY_TABLE).exists()


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/data/lake/events", "/data/lake/events"),
        ("abfss://events@acct.dfs.core.windows.net/dne", "abfss://events@acct.dfs.core.windows.net/dne"),
        ("s3a://AKIAEXAMPLE:s3cr3t/key@bucket/dne", "s3a://***@bucket/dne"),
        ("s3a://bucket/dne", "s3a://bucket/dne"),
        (
            "wasbs://c@acct.blob.core.windows.net/dne?sv=2024&sig=abc%2Fdef",
            "wasbs://c@acct.blob.core.windows.net/dne?***",
        ),
    ],
)
def test_redact_hides_credentials_in_paths(path, shown):
    assert redact(path) == shown
