"""Nightly incremental mode: stored blocks of days rolled up equal a full run of the same window.

One small simulated fleet (12 devices x 6 days, 10 events per device-day) is generated once per
module, with a seventh day kept aside as a pool of "late" events. Days are ``D0`` .. ``D5``.
The first night (window [D0, D3], 2 refresh days: one-day blocks only) also runs once per
module; tests that run further nights start from a copy of its output root. A 20-day window
holds two aligned 8-day blocks, so one test rolls those up.

"Equal" is exact: every column of every row of the window's partition of ``firewall_policy``
(arrays included, in their written order), ``unusual_programs`` and ``excluded_connections``.
The spec, the blocks of days and the plan, which need no Spark job, are in
``unit/test_nightly_blocks.py``.

Each night is a few dozen small Spark jobs (about 10 s here), so the scenarios of several
nights or runs each (the next night and a rerun of it, late events, and a 20-day window of
8-day blocks), and the first night itself against a full run, are in the ``slow`` tier
(``make slow-test``) for the suite's time budget; ``make test`` keeps the pruned read of the days
and the refusals, and ``test_summary_columns`` rolls stored days up against the events.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from fwpolicy.config import ConfigError, PolicyConfig, RunSpec
from fwpolicy.io.sink import table_path
from fwpolicy.query.seed import DEVICE, INBOUND_DETAIL
from fwpolicy.review.hunting import HUNTING_TABLE
from fwpolicy.tasks.audit import AUDIT_TABLE
from fwpolicy.tasks.generate import generate_events, write_lake
from fwpolicy.tasks.nightly import (
    BLOCK_BITS,
    BLOCK_DAYS,
    BLOCK_START,
    DAY_COLUMN,
    DIGEST_COLUMN,
    STATE_TABLE,
    NightlyResult,
    NightlySpec,
    blocks_of,
    partials_digest,
    read_days,
    run_nightly,
)
from fwpolicy.tasks.run import EXCLUDED_TABLE, POLICY_TABLE, run
from plans import partition_count, scan_nodes

D0 = dt.date(2026, 8, 1)
DEVICES, DAYS, PER_DEVICE_DAY = 12, 6, 10
PER_DAY = DEVICES * PER_DEVICE_DAY
WINDOW, REFRESH = 4, 2
WINDOW_TABLES = (POLICY_TABLE, HUNTING_TABLE, EXCLUDED_TABLE)


def day(i: int) -> dt.date:
    return D0 + dt.timedelta(days=i)


def days(lo: int, hi: int) -> list[dt.date]:
    """Days ``D<lo>`` .. ``D<hi>`` inclusive."""
    return [day(i) for i in range(lo, hi + 1)]


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def interpreted(spark: SparkSession):
    """Whole-stage code generation off for this module, restored after it.

    Its queries run on a few hundred rows, where compiling generated code costs more than it
    saves (measured on this suite: about 35% less CPU per night). Results do not depend on it,
    and the nightly and the full run it is compared with run under the same setting.
    """
    key = "spark.sql.codegen.wholeStage"
    saved = spark.conf.get(key, None)
    spark.conf.set(key, "false")
    yield
    if saved is None:
        spark.conf.unset(key)
    else:
        spark.conf.set(key, saved)


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A Parquet lake of days D0..D5 partitioned by EventDate, and the events of D6 kept aside."""
    root = tmp_path_factory.mktemp("nightly")
    events = generate_events(
        spark, DEVICES, DAYS + 1, seed=11, start=D0, events_per_device_day=PER_DEVICE_DAY
    ).persist()
    try:
        write_lake(events.where(F.col("EventDate") < F.lit(day(DAYS))), str(root / "lake"), "parquet")
        write_lake(events.where(F.col("EventDate") == F.lit(day(DAYS))), str(root / "spare"), "parquet")
    finally:
        events.unpersist()
    return {"lake": str(root / "lake"), "spare": str(root / "spare")}


def nightly(source: str, output: str, date: dt.date, **kw: Any) -> NightlySpec:
    kw.setdefault("window_days", WINDOW)
    kw.setdefault("refresh_days", REFRESH)
    return NightlySpec(source, "parquet", output, date, **kw)


@pytest.fixture(scope="module")
def first_night(spark, lake, tmp_path_factory) -> tuple[NightlySpec, NightlyResult]:
    """The first night over the lake: window [D0, D3], nothing stored yet."""
    spec = nightly(lake["lake"], str(tmp_path_factory.mktemp("first") / "out"), day(3))
    return spec, run_nightly(spec, spark)


def copy_lake(lake: dict[str, str], tmp_path: Path) -> str:
    """A private copy of the lake, for a test that appends to its source."""
    shutil.copytree(lake["lake"], tmp_path / "lake")
    return str(tmp_path / "lake")


def copy_output(first: NightlySpec, tmp_path: Path) -> str:
    """A private copy of the first night's output root (Delta logs hold relative paths)."""
    shutil.copytree(first.output, tmp_path / "out")
    return str(tmp_path / "out")


def append_late_events(spark: SparkSession, spare: str, source: str, to: dt.date, null_timestamps: int = 0):
    """Append the spare day's events to ``source`` as events of day ``to`` that arrived late.

    ``null_timestamps`` of them lose their Timestamp (but stay in ``to``'s partition).
    """
    shift = (day(DAYS) - to).days
    rank = F.row_number().over(Window.orderBy("Timestamp", "DeviceId", "LocalPort", "RemoteIP"))
    late = (
        spark.read.parquet(spare)
        .withColumn("_rank", rank)
        .withColumns(
            {
                "Timestamp": F.when(F.col("_rank") > null_timestamps, F.col("Timestamp"))
                - F.expr(f"INTERVAL {shift} DAYS"),
                "EventDate": F.lit(to),
            }
        )
        .drop("_rank")
    )
    late.write.mode("append").partitionBy("EventDate").parquet(source)


def window_tables(spark: SparkSession, output: str, window_end: dt.date) -> dict[str, list[dict[str, Any]]]:
    """Every column of one window's partition of each table ``run`` writes, as sorted Row dicts."""
    out = {}
    for name in WINDOW_TABLES:
        table = spark.read.format("delta").load(table_path(output, name))
        rows = table.where(F.col("window_end") == F.lit(window_end)).collect()
        out[name] = sorted((r.asDict(recursive=True) for r in rows), key=repr)
    return out


def full_run(spark: SparkSession, spec: NightlySpec, output: str) -> dict[str, list[dict[str, Any]]]:
    """``fwpolicy run`` over the nightly's window, to another output root; its tables' rows."""
    full = RunSpec(spec.source, spec.source_format, output, spec.window_start, spec.window_end, spec.policy)
    run(full, spark)
    return window_tables(spark, output, spec.window_end)


def normalized(row: dict[str, Any]) -> dict[str, Any]:
    """Row dict with unordered sets (collect_set order) sorted, for the state table."""
    return {k: sorted(v) if isinstance(v, list) else v for k, v in row.items()}


def state_rows(spark: SparkSession, output: str) -> list[dict[str, Any]]:
    """Every row of the state table (blocks of every length)."""
    table = spark.read.format("delta").load(table_path(output, STATE_TABLE))
    return sorted((normalized(r.asDict(recursive=True)) for r in table.collect()), key=repr)


def stored_connections(spark: SparkSession, output: str, d: dt.date) -> int:
    """Events the stored one-day block of day ``d`` accounts for (kept and removed rows alike)."""
    table = spark.read.format("delta").load(table_path(output, STATE_TABLE))
    one_day = (F.col(BLOCK_DAYS) == F.lit(1)) & (F.col(BLOCK_START) == F.lit(d))
    # Each event is counted once in DEVICE or INBOUND_DETAIL (and again in other facets).
    rows = table.where(one_day & F.col("Facet").isin(DEVICE, INBOUND_DETAIL))
    return rows.agg(F.sum("Connections")).first()[0]


def audit_row(spark: SparkSession, output: str, run_id: str) -> dict[str, Any]:
    table = spark.read.format("delta").load(table_path(output, AUDIT_TABLE))
    (row,) = table.where(F.col("run_id") == F.lit(run_id)).collect()
    return row.asDict()


def total(rows: list[dict[str, Any]]) -> int:
    return sum(r["ConnectionCount"] for r in rows)


# --------------------------------------------------------------------------------------------
# Spark runs
# --------------------------------------------------------------------------------------------


@pytest.mark.slow  # a night and a full run: the suite's time budget
def test_first_night_equals_full_run(spark, first_night, tmp_path):
    first, result = first_night
    # First night: nothing stored, every day of the window [D0, D3] is computed.
    assert result.days_computed == days(0, 3)
    assert result.days_reused == []
    assert (result.window_start, result.window_end) == (day(0), day(4))
    assert result.unusable_timestamp_events == 0
    first_tables = window_tables(spark, first.output, day(4))
    assert result.policy_rows_written == len(first_tables[POLICY_TABLE]) > 0
    assert len(first_tables[HUNTING_TABLE]) > 0
    assert first_tables == full_run(spark, first, str(tmp_path / "full1"))
    assert {r["window_start"] for r in first_tables[POLICY_TABLE]} == {day(0)}
    assert "days computed:  4 (2026-08-01..2026-08-04)" in result.describe()
    assert (result.blocks_built, result.blocks_rolled_up) == ({}, 4)  # four one-day blocks
    audit = audit_row(spark, first.output, result.run_id)
    assert (audit["command"], audit["status"]) == ("nightly", "succeeded")
    assert (audit["window_start"], audit["window_end"]) == (day(0), day(4))
    assert audit["rows_read"] == 4 * PER_DAY
    assert audit["rows_written"] == result.policy_rows_written


@pytest.mark.slow  # two more nights and a full run: see the module docstring
def test_next_night_computes_new_and_refresh_days_and_equals_a_full_run(spark, first_night, tmp_path):
    first, _ = first_night
    first_tables = window_tables(spark, first.output, day(4))
    # Next night: the new day D4 and the refresh days D3, D4; D1 and D2 are reused.
    out = copy_output(first, tmp_path)
    second = nightly(first.source, out, day(4))
    result = run_nightly(second, spark)
    assert result.days_computed == days(3, 4)
    assert result.days_reused == days(1, 2)
    tables = window_tables(spark, out, day(5))
    # A full run into a copy of the first night's output: the same earlier window to compare
    # with, so policy_changes must agree too.
    assert tables == full_run(spark, second, copy_output(first, tmp_path / "full2"))
    assert result.changes is not None and result.changes.previous_window_end == day(4)
    assert "policy changes: since 2026-08-05" in result.describe()
    state = state_rows(spark, out)
    assert {r[BLOCK_DAYS] for r in state} == {1}  # a 4-day window holds no aligned 8-day block
    assert {r[BLOCK_START] for r in state} == set(days(0, 4))  # D0 stays, outside the window
    assert {r[BLOCK_BITS] for r in state} == {1} and {r[DAY_COLUMN] for r in state} == {None}
    assert {r[DIGEST_COLUMN] for r in state} == {partials_digest(PolicyConfig())}
    assert audit_row(spark, out, result.run_id)["rows_read"] == 2 * PER_DAY  # D3 and D4 only

    # The same night again: the same days recomputed, the same tables (idempotent).
    again = run_nightly(second, spark)
    assert again.days_computed == days(3, 4)
    assert window_tables(spark, out, day(5)) == tables
    assert state_rows(spark, out) == state
    assert again.policy_rows_written == len(tables[POLICY_TABLE])
    # Each night replaced only its own window_end partition.
    assert window_tables(spark, out, day(4)) == first_tables
    ends = spark.read.format("delta").load(table_path(out, POLICY_TABLE)).select("window_end").distinct()
    assert sorted(r[0] for r in ends.collect()) == [day(4), day(5)]


@pytest.mark.slow  # three nights or runs: see the module docstring
def test_late_events_within_refresh_are_included_older_ones_are_not(spark, lake, first_night, tmp_path):
    """Late events of a refresh day enter the next night's result; older late ones do not.

    Trade-off: a stored day outside the refresh range is never read again, so events that
    arrive more than ``refresh_days`` late are missed until that day is recomputed (a run
    with ``refresh_days >= window_days`` recomputes the whole window).
    """
    first, _ = first_night
    source, out = copy_lake(lake, tmp_path), copy_output(first, tmp_path)
    spec = nightly(source, out, day(3))  # window [D0, D3], refresh D2, D3; all stored
    before = window_tables(spark, out, day(4))[POLICY_TABLE]

    # Late events of D3 (within the refresh range), 3 of them without a usable Timestamp.
    append_late_events(spark, lake["spare"], source, day(3), null_timestamps=3)
    result = run_nightly(spec, spark)
    assert result.days_computed == days(2, 3)
    assert result.days_reused == days(0, 1)
    assert result.unusable_timestamp_events == 3  # counted, not stored, not in the policy
    assert "unusable Timestamp: 3 events" in result.describe()
    assert audit_row(spark, out, result.run_id)["rejected"] == {"null_timestamp": 3}
    assert stored_connections(spark, out, day(3)) == 2 * PER_DAY - 3
    tables = window_tables(spark, out, day(4))
    assert total(tables[POLICY_TABLE]) > total(before)
    assert tables == full_run(spark, spec, str(tmp_path / "full"))

    # Late events of D1 (stored, outside the refresh range): not read again, result unchanged.
    append_late_events(spark, lake["spare"], source, day(1))
    result = run_nightly(spec, spark)
    assert result.days_computed == days(2, 3)
    assert window_tables(spark, out, day(4)) == tables
    in_source = spark.read.parquet(source).where(F.to_date("Timestamp") == F.lit(day(1))).count()
    assert in_source == 2 * PER_DAY
    assert stored_connections(spark, out, day(1)) == PER_DAY  # the late half is missed


@pytest.mark.slow  # two nights: the suite's time budget
def test_changed_config_recomputes_every_day(spark, first_night, tmp_path):
    """Inbound remote IPs and benign-traffic rules change the connection table: no day is reused."""
    first, _ = first_night
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - {name: browser, action: exclude, match: {file_name: [chrome.exe]}}\n"
        "  - {name: sync, action: tag, match: {file_name: [OneDrive.exe]}}\n"
    )
    cfg = PolicyConfig(include_inbound_remote_ips=True, exclusions=str(rules))
    out = copy_output(first, tmp_path)
    changed = nightly(first.source, out, day(3), policy=cfg)
    result = run_nightly(changed, spark)
    assert result.days_computed == days(0, 3)
    assert result.days_reused == []
    # (No full run here, to keep the file fast: the rules reach the blocks through the same
    # seed.where_clauses call as run's; the tests above show blocks roll up to run's tables.)
    tables = window_tables(spark, out, day(4))
    policy = tables[POLICY_TABLE]
    assert any(r["Directionality"] == "Inbound" and r["RemoteIPs"] != [""] for r in policy)
    assert {r["Rule"] for r in tables[EXCLUDED_TABLE]} == {"browser"}
    assert not any("chrome" in r["AliasPath"] for r in policy)
    assert any(r["Tags"] == ["sync"] for r in policy)
    stored = spark.read.format("delta").load(table_path(out, STATE_TABLE)).select(DIGEST_COLUMN)
    assert {r[0] for r in stored.distinct().collect()} == {partials_digest(cfg)}


@pytest.mark.slow  # three nights or runs: see the module docstring
def test_long_window_rolls_up_eight_day_blocks_as_a_full_run(spark, lake, tmp_path):
    """A 20-day window ending on D5 is four single days and two aligned 8-day blocks; the lake's
    days D0..D5 all fall in the second block. Rolled up, the blocks equal a full run, whether the
    8-day blocks were built tonight or stored by an earlier night."""
    out = str(tmp_path / "out")
    spec = nightly(lake["lake"], out, day(5), window_days=20)
    eight = (day(-2), 8)  # 2026-07-30 .. 2026-08-06: D0 is its third day
    window = blocks_of(spec.window_start, spec.window_end)
    assert window == [(day(i), 1) for i in range(-14, -10)] + [(day(-10), 8), eight]
    result = run_nightly(spec, spark)
    assert result.days_computed == spec.window() and result.days_reused == []
    assert (result.blocks_built, result.blocks_rolled_up) == ({8: 2}, 6)
    tables = window_tables(spark, out, spec.window_end)
    assert total(tables[POLICY_TABLE]) > 0
    assert tables == full_run(spark, spec, str(tmp_path / "full"))

    # The stored 8-day block: its days are bits 2..7 (D0..D5), and it counts every event once.
    state = spark.read.format("delta").load(table_path(out, STATE_TABLE))
    block = state.where((F.col(BLOCK_DAYS) == 8) & (F.col(BLOCK_START) == F.lit(eight[0])))
    bits, events = block.agg(
        F.bit_or(BLOCK_BITS),
        F.sum(F.when(F.col("Facet").isin(DEVICE, INBOUND_DETAIL), F.col("Connections"))),
    ).first()
    assert (bits, events) == (0b11111100, DAYS * PER_DAY)

    # Another night with nothing to refresh reads the stored 8-day block instead of its days.
    again = nightly(lake["lake"], out, day(5), window_days=20, refresh_days=0)
    result = run_nightly(again, spark)
    assert set(days(-2, 5)) <= set(result.days_reused)
    assert not set(days(-2, 5)) & set(result.days_computed)
    # Only the first 8-day block is built again: it holds no event, so no row of it is stored.
    assert result.blocks_built == {8: 1}
    assert window_tables(spark, out, spec.window_end) == tables


def test_read_days_reads_only_the_partitions_of_the_days(spark, lake):
    """One scan, with partition filters: the days' partitions and their neighbours only."""
    spec = nightly(lake["lake"], "/nonexistent/out", day(5), window_days=6)
    df = read_days(spark, spec, [day(0), day(4)])
    assert df.count() == 2 * PER_DAY
    (scan,) = scan_nodes(df)
    assert "EventDate" in scan.partitionFilters().mkString(", ")
    # D0 and D4 with a day's margin: D0, D1, D3, D4, D5 (D-1 does not exist). D2 is pruned.
    assert partition_count(scan) == 5


def test_output_inside_source_is_refused(spark, tmp_path):
    source = tmp_path / "lake"
    source.mkdir()
    spec = NightlySpec(str(source), "parquet", str(source / "out"), day(0))
    with pytest.raises(ConfigError, match="inside the source"):
        run_nightly(spec, spark)
    assert not (source / "out").exists()


@pytest.mark.slow  # it needs the first night's state
def test_state_of_an_older_layout_is_refused_by_name(spark, first_night, tmp_path):
    """A state table partitioned as an older fwpolicy did (no digest in the partition) cannot
    have its blocks replaced: the night fails with an error that says so and what to do, and
    the table is left as it was."""
    first, _ = first_night
    out = copy_output(first, tmp_path)
    path = table_path(out, STATE_TABLE)
    state = spark.read.format("delta").load(path)
    rows = state.count()
    state.localCheckpoint().write.format("delta").mode("overwrite").option(
        "overwriteSchema", "true"
    ).partitionBy(BLOCK_DAYS, BLOCK_START).save(path)
    with pytest.raises(ConfigError, match=r"older fwpolicy.*delete it"):
        run_nightly(nightly(first.source, out, day(4)), spark)
    assert spark.read.format("delta").load(path).count() == rows
