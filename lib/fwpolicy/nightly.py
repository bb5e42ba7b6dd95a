"""Nightly incremental mode: daily partial aggregates, rolled up into the window's tables.

A full ``run`` over a 90-day window reads 90 days of events every night. The nightly mode
keeps the connection table of ``fwpolicy.classify.connections`` for each UTC day (its facets
with ``EventDate`` in the key; every aggregate in it mergeable) as a Delta table of daily
partials, and each night:

1. finds the window's days ``[date - window_days + 1, date]`` that the partials table lacks
   (or holds under another configuration digest), plus the last ``refresh_days`` days of the
   window, which are recomputed for late-arriving events;
2. reads the source once for exactly those days (date partitions pruned to those days), builds
   their connection rows and replaces their ``EventDate`` partitions in one Delta commit;
3. merges the window's partials into the table a full run builds (``classify.roll_up_days``)
   and replaces the ``window_end = date + 1`` partition of ``firewall_policy``,
   ``unusual_programs`` and ``excluded_connections``, as ``run`` does; then appends the
   night's row to ``run_audit`` (``command = 'nightly'``; its counts are those of the rows
   read that night).

Because a connection row of day ``d`` depends only on the events of day ``d``, the merged
partials of the window are exactly the connection table a full ``run`` would build (less the rows of
events with an unusable ``Timestamp``, which are removed rows and never reach the policy), so
the rolled-up tables equal a full run over the same window, row for row.

Trade-offs: events that arrive more than ``refresh_days`` days late are not picked up for days
already stored; the stored day keeps its earlier partials until it is recomputed (a run with
``refresh_days >= window_days`` recomputes the whole window). A day with no events at all is
never stored, so it is retried every night until its events appear. A full run prunes date
partitions to the window plus one day each side; the nightly prunes to each computed day plus
one day each side, so an event filed more than a day away from its own date's partition can be
seen by a full run and not by the nightly.

Tables, under the output root: ``daily_connections`` (Delta, partitioned by ``EventDate``;
the connection table plus ``config_digest``), and those of ``run``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.audit import RunAudit
from fwpolicy.classify import connections, roll_up_days
from fwpolicy.config import SOURCE_FORMATS, ConfigError, PolicyConfig, RunSpec
from fwpolicy.exclusions import RuleSet, load_rules
from fwpolicy.hunting import HUNTING_TABLE
from fwpolicy.pipeline import (
    EXCLUDED_TABLE,
    POLICY_TABLE,
    check_paths,
    persisted,
    write_window_tables,
    written_rows,
)
from fwpolicy.session import get_spark
from fwpolicy.sink import ensure_owned_under, read_table, replace_where, table_path
from fwpolicy.source import partition_column, read_window

log = logging.getLogger(__name__)

PARTIALS_TABLE = "daily_connections"
DAY_COLUMN = "EventDate"
DIGEST_COLUMN = "config_digest"
# Bump when fwpolicy.classify.connections changes what a stored row means: every stored day is
# then recomputed on the next night, as after a configuration change.
PARTIALS_FORMAT = 2  # 2: the facets of classify.aggregate_connections
# PolicyConfig fields that act only after the connection table (the roll-up, the aliases, the
# hunting table, the join plan, the read's pruning). Every other field is in the digest, so a
# setting added later invalidates stored days by default rather than silently reusing them.
ROLLUP_ONLY_FIELDS = frozenset(
    {"set_cap", "distinct_machines", "server_keys_join", "partition_columns", "aliases", "hunting"}
)


def partials_digest(cfg: PolicyConfig, rules: RuleSet | None = None) -> str:
    """A short stable hash of the settings that change the connection table.

    Those are ``profile``, the ephemeral range starts, ``include_inbound_remote_ips`` and the
    benign-traffic rules: every field outside ``ROLLUP_ONLY_FIELDS``, plus ``PARTIALS_FORMAT``.
    The rules count by their content (``RuleSet.digest``), not by their file's path, so an
    edited rule file recomputes every day and a moved one does not. ``rules`` is the loaded
    ``cfg.exclusions`` (loaded here when not given).
    """
    values = {f.name: getattr(cfg, f.name, None) for f in dataclasses.fields(cfg)}
    kept = {k: v for k, v in values.items() if k not in ROLLUP_ONLY_FIELDS}
    if kept.get("exclusions") is not None:
        kept["exclusions"] = (rules or load_rules(kept["exclusions"])).digest()
    blob = json.dumps({"format": PARTIALS_FORMAT, **kept}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_day(value: object) -> bool:
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


@dataclass(frozen=True)
class NightlySpec:
    """One night: the source, the output root, and the window ``[date - window_days + 1, date]``."""

    source: str
    source_format: str
    output: str
    date: dt.date
    window_days: int = 90
    refresh_days: int = 2
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if self.source_format not in SOURCE_FORMATS:
            raise ConfigError(f"source format must be one of {SOURCE_FORMATS}, got {self.source_format!r}")
        if not _is_day(self.date):
            raise ConfigError(f"date must be a date (YYYY-MM-DD), got {self.date!r}")
        if not (_is_int(self.window_days) and self.window_days >= 1):
            raise ConfigError(f"window_days must be an integer >= 1, got {self.window_days!r}")
        if not (_is_int(self.refresh_days) and self.refresh_days >= 0):
            raise ConfigError(f"refresh_days must be an integer >= 0, got {self.refresh_days!r}")

    @property
    def window_start(self) -> dt.date:
        return self.date - dt.timedelta(days=self.window_days - 1)

    @property
    def window_end(self) -> dt.date:
        """Exclusive end of the window, the ``window_end`` of its ``firewall_policy`` partition."""
        return self.date + dt.timedelta(days=1)

    def window(self) -> list[dt.date]:
        """The window's days, oldest first."""
        return [self.window_start + dt.timedelta(days=i) for i in range(self.window_days)]

    def refresh(self) -> list[dt.date]:
        """The last ``refresh_days`` days of the window, recomputed every night."""
        return self.window()[self.window_days - min(self.refresh_days, self.window_days) :]

    def run_spec(self) -> RunSpec:
        """The full ``run`` over the same window (same paths and settings)."""
        return RunSpec(
            self.source, self.source_format, self.output, self.window_start, self.window_end, self.policy
        )


def format_days(days: Iterable[dt.date]) -> str:
    """``2026-08-01..2026-08-03, 2026-08-07``: consecutive days folded into ranges."""
    ordered = sorted(set(days))
    if not ordered:
        return "none"
    runs: list[list[dt.date]] = [[ordered[0], ordered[0]]]
    for d in ordered[1:]:
        if d - runs[-1][1] == dt.timedelta(days=1):
            runs[-1][1] = d
        else:
            runs.append([d, d])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


@dataclass(frozen=True)
class NightlyResult:
    """What one night computed, reused and wrote (``table``: its ``firewall_policy``)."""

    table: str
    partials_table: str
    window_start: dt.date
    window_end: dt.date
    days_computed: list[dt.date]
    days_reused: list[dt.date]
    partial_rows_written: int
    policy_rows_written: int
    # Events of the computed days whose Timestamp is unusable: removed rows with no day to be
    # stored under, so they are counted here instead (the run audit of a full run counts them).
    unusable_timestamp_events: int
    seconds: float
    step_seconds: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None  # the night's row in run_audit (and userMetadata of its commits)

    def describe(self) -> str:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.step_seconds.items())
        days = len(self.days_computed) + len(self.days_reused)
        lines = [
            f"nightly firewall_policy, window [{self.window_start}, {self.window_end}) ({days} days)",
            f"  days computed:  {len(self.days_computed)} ({format_days(self.days_computed)})",
            f"  days reused:    {len(self.days_reused)} ({format_days(self.days_reused)})",
            f"  partial rows:   {self.partial_rows_written} written to {self.partials_table}",
            f"  policy rows:    {self.policy_rows_written} written to {self.table}",
        ]
        if self.run_id:
            lines.append(f"  run id:         {self.run_id} (run_audit)")
        if self.unusable_timestamp_events:
            lines.append(
                f"  unusable Timestamp: {self.unusable_timestamp_events} events removed "
                "(no day to store them under)"
            )
        lines.append(f"  time taken:     {self.seconds:.1f}s" + (f" ({steps})" if steps else ""))
        return "\n".join(lines)


def days_predicate(column: str, days: Iterable[dt.date]) -> str:
    """SQL ``column IN (DATE'..', ...)`` for ``replaceWhere``, built from parsed dates only."""
    days = sorted(set(days))
    if not days:
        raise ValueError("no days given")
    for d in days:
        if not _is_day(d):
            raise TypeError(f"days must be dates, got {type(d).__name__}")
    if not column.isidentifier():
        raise ValueError(f"not a column name: {column!r}")
    dates = ", ".join(f"DATE'{d.isoformat()}'" for d in days)
    return f"{column} IN ({dates})"


def replace_days(
    df: DataFrame,
    path: str,
    days: Iterable[dt.date],
    column: str = DAY_COLUMN,
    user_metadata: str | None = None,
) -> None:
    """Atomically replace the ``column`` partitions of ``days`` in the Delta table at ``path``.

    One commit: readers see all the old days or all the new ones. A day of ``days`` with no row
    in ``df`` ends up empty; days not listed are never touched. Delta refuses rows of ``df``
    outside ``days`` (replaceWhere's constraint check). The table is fwpolicy-owned (created,
    marked, if absent; refused if foreign) and a commit conflict is retried
    (``sink.replace_where``).
    """
    predicate = days_predicate(column, days)
    replace_where(df, path, predicate, (column,), user_metadata)
    log.info("replaced partitions %s of %s", predicate, path)


def _is_delta_table(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def stored_days(spark: SparkSession, path: str, digest: str, first: dt.date, last: dt.date) -> set[dt.date]:
    """Days of ``[first, last]`` the partials table holds under ``digest`` (a small collect)."""
    if not _is_delta_table(spark, path):
        return set()
    days = (
        read_table(spark, path)
        .where(F.col(DAY_COLUMN).between(F.lit(first), F.lit(last)))
        .where(F.col(DIGEST_COLUMN) == F.lit(digest))
        .select(DAY_COLUMN)
        .distinct()
    )
    return {r[DAY_COLUMN] for r in days.collect()}  # at most window_days dates


def _partition_literal(df: DataFrame, part: str, d: dt.date) -> Column:
    is_text = isinstance(df.schema[part].dataType, T.StringType)
    return F.lit(d.isoformat()) if is_text else F.lit(d)


def read_days(spark: SparkSession, spec: NightlySpec, days: Iterable[dt.date]) -> DataFrame:
    """The source's events of ``days`` (UTC), read once, with date partitions pruned to them.

    ``read_window`` reads the span ``[min, max + 1)``; when the source has a date partition
    column, a second partition filter keeps only the partitions of the days and their
    neighbours (the same one-day margin as ``source.window_filter``), so days missing in the
    middle of the window do not cost a read of the whole span. Events with an unusable
    ``Timestamp`` are kept (from the days' own partitions when the layout has them) so they
    can be counted.
    """
    days = sorted(set(days))
    cfg = spec.policy
    span_end = days[-1] + dt.timedelta(days=1)
    events = read_window(spark, spec.source, spec.source_format, days[0], span_end, cfg.partition_columns)
    unusable = F.col("Timestamp").isNull()
    part = partition_column(events, cfg.partition_columns)
    if part is not None:
        margin = dt.timedelta(days=1)
        near = sorted({d + k * margin for d in days for k in (-1, 0, 1)})
        events = events.where(F.col(part).isin(*(_partition_literal(events, part, d) for d in near)))
        unusable = unusable & F.col(part).isin(*(_partition_literal(events, part, d) for d in days))
    # The same expression as classify's EventDate (the session time zone is UTC).
    in_days = F.to_date("Timestamp").isin(*(F.lit(d) for d in days))
    return events.where(in_days | unusable)


def _timed(steps: dict[str, float], name: str, began: float) -> float:
    now = time.monotonic()
    steps[name] = now - began
    return now


def run_nightly(spec: NightlySpec, spark: SparkSession | None = None) -> NightlyResult:
    """Update the daily partials of ``spec``'s window and replace its partition of each table.

    Like ``pipeline.run``: refuses an output inside the source and output tables fwpolicy did
    not create before any work (``ConfigError``), tags every commit with the night's run id,
    and records the night in ``run_audit`` (a ``failed`` row if it fails).
    """
    run_spec = spec.run_spec()
    check_paths(run_spec)
    spark = spark or get_spark()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # days and windows are UTC
    began = step = time.monotonic()
    steps: dict[str, float] = {}
    cfg = spec.policy
    partials_path = table_path(spec.output, PARTIALS_TABLE)
    policy_path = table_path(spec.output, POLICY_TABLE)
    ensure_owned_under(spark, spec.output, (PARTIALS_TABLE, POLICY_TABLE, EXCLUDED_TABLE, HUNTING_TABLE))
    audit = RunAudit(spark, "nightly", run_spec)  # refuses a foreign run_audit too
    rules = load_rules(cfg.exclusions) if cfg.exclusions else None  # a bad file fails before work
    digest = partials_digest(cfg, rules)
    tag = audit.commit_tag
    window = spec.window()
    try:
        # 1. Which days to compute.
        stored = stored_days(spark, partials_path, digest, window[0], window[-1])
        refresh = set(spec.refresh())
        to_compute = sorted(d for d in window if d not in stored or d in refresh)
        reused = [d for d in window if d not in to_compute]
        log.info(
            "nightly window [%s, %s]: computing %s (refresh %d days); reusing %s (config %s)",
            window[0],
            window[-1],
            format_days(to_compute),
            spec.refresh_days,
            format_days(reused),
            digest,
        )
        step = _timed(steps, "plan", step)

        # 2. Partials of the days to compute: one read of the source, one Delta commit.
        partial_rows = unusable_events = 0
        if to_compute:
            events = read_days(spark, spec, to_compute)
            excluded, tags = rules.expressions(set(events.columns)) if rules else (None, None)
            audit.read(events)
            with persisted(connections(events, cfg, excluded, tags)) as conns:
                day = F.col(DAY_COLUMN)
                stored_rows = conns.where(day.isNotNull()).withColumn(DIGEST_COLUMN, F.lit(digest))
                # One file per day rather than one per task and day: every night reads them all.
                stored_rows = stored_rows.repartition(DAY_COLUMN)
                replace_days(stored_rows, partials_path, to_compute, user_metadata=tag)
                # Rows without a day are removed rows (unusable Timestamp); count their events.
                lost = conns.where(day.isNull()).agg(F.sum("Connections").alias("n")).first()
                audit.count(conns, cfg)  # what became of the rows read tonight
            unusable_events = int((lost["n"] if lost else None) or 0)
            partial_rows = written_rows(spark, partials_path, tag)
            if unusable_events:
                log.warning(
                    "%d events of %s have an unusable Timestamp: removed, not stored",
                    unusable_events,
                    format_days(to_compute),
                )
            log.info("wrote %d partial rows for %d days to %s", partial_rows, len(to_compute), partials_path)
        step = _timed(steps, "partials", step)

        # 3. Roll the window up, as run() writes a window from its connection table.
        # The table exists now: either days were just written or every day was already stored.
        partials = (
            read_table(spark, partials_path)
            .where(F.col(DAY_COLUMN).between(F.lit(window[0]), F.lit(window[-1])))
            .where(F.col(DIGEST_COLUMN) == F.lit(digest))
            .drop(DIGEST_COLUMN)
        )
        excluding = rules is not None and bool(rules.exclude_rules)
        start, end = spec.window_start, spec.window_end
        with persisted(roll_up_days(partials, start, end)) as kept:  # read by every table's branches
            write_window_tables(kept, cfg, spec.output, start, end, tag, excluding)
        policy_rows = written_rows(spark, policy_path, tag)
        step = _timed(steps, "roll-up", step)
    except Exception:
        audit.failed()  # best effort: a 'failed' row in run_audit, then the original error
        raise

    result = NightlyResult(
        table=policy_path,
        partials_table=partials_path,
        window_start=spec.window_start,
        window_end=spec.window_end,
        days_computed=to_compute,
        days_reused=reused,
        partial_rows_written=partial_rows,
        policy_rows_written=policy_rows,
        unusable_timestamp_events=unusable_events,
        seconds=time.monotonic() - began,
        step_seconds=steps,
        run_id=audit.run_id,
    )
    log.info(
        "nightly wrote %d policy rows to %s in %.1fs (%s)",
        policy_rows,
        policy_path,
        result.seconds,
        ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()),
    )
    audit.finish(policy_rows)
    return result
