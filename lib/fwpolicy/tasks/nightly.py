"""Nightly incremental mode: the reduced table kept in blocks of days, rolled up per window.

A full ``run`` over a 90-day window reads 90 days of events every night. The nightly mode keeps
the seed query's reduced table (``seed.connection_table``: only mergeable aggregates) as a
Delta table of *blocks*: a block holds the reduced rows of ``BlockDays`` consecutive days (1, 8
or 64, aligned on multiples of that length since 1970-01-01), with no day in its key: the days
a row was seen are one 64-bit word, ``BlockBits``. A connection seen every day of a 64-day
block is one row there, not 64, so the state shrinks as connections repeat. Each night:

1. splits the window ``[date - window_days + 1, date]`` into the fewest aligned blocks
   (``blocks_of``: at most a few of each length, whatever the window's length) and finds the
   blocks that are missing, stored under another configuration digest, or hold a day being
   recomputed. The last ``refresh_days`` days are always recomputed, for late events;
2. reads the source once for the days that must be computed (date partitions pruned to them),
   and stores their one-day blocks in one Delta commit;
3. builds each missing longer block from the eight blocks under it (one commit per length);
4. rolls the window's blocks up into the reduced table a full run builds (``roll_up``; inbound
   rows that no server key of the window admits are dropped before they merge,
   ``seed.served_only``, as the semi join would drop them after), runs steps 2 to 6 of the
   seed query over it, and replaces the ``window_end = date + 1`` partition of
   ``firewall_policy``, ``unusual_programs``, ``excluded_connections`` and ``policy_changes``,
   as ``run`` does; then appends the night's row to ``run_audit`` (``command = 'nightly'``;
   its counts are those of the events read that night).

A reduced row of day ``d`` depends only on the events of day ``d``, and every aggregate merges
again (sum, min, max, bit-or), so the rolled-up table equals the one a full ``run`` would build
(less the events with an unusable ``Timestamp``, which are removed rows and never reach the
policy): the tables equal a full run over the same window, row for row.

Trade-offs: events that arrive more than ``refresh_days`` days late are not picked up for days
already stored; a stored day keeps its rows until it is recomputed (``refresh_days >=
window_days`` recomputes the whole window). A full run prunes date partitions to the window
plus one day each side; the nightly prunes to each computed day plus one day each side, so an
event filed more than a day away from its own date's partition can be seen by a full run and not
by the nightly. A day with no events at all stores no rows, so it (and any longer block holding
it) is computed again each night, reading nothing. Blocks are never deleted: a window that
moves back reuses them.

Tables, under the output root: ``connection_blocks`` (Delta, partitioned by ``BlockDays``,
``BlockStart`` and ``config_digest``; the reduced rows plus ``BlockBits``), and those of ``run``.
The digest is a partition column so that the blocks a night can reuse are found from partition
values alone, without reading the stored rows (``stored_blocks``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import SOURCE_FORMATS, ConfigError, PolicyConfig, RunSpec, stable_digest
from fwpolicy.io.session import get_spark
from fwpolicy.io.sink import check_outputs, commit_tag, read_table, replace_where, table_path
from fwpolicy.io.source import SourceError, partition_column, read_errors, read_window
from fwpolicy.io.storage import delta_detail, is_delta_table
from fwpolicy.query.seed import (
    DAY_BITS,
    connection_table,
    from_connections,
    materialized,
    merge_rows,
    served_only,
    where_clauses,
)
from fwpolicy.review.exclusions import RuleSet, load_rules
from fwpolicy.tasks.audit import AUDIT_TABLE, RunAudit
from fwpolicy.tasks.run import POLICY_TABLE, WINDOW_TABLES, Changes, check_paths, write_window_tables

log = logging.getLogger(__name__)

STATE_TABLE = "connection_blocks"
DAY_COLUMN = "EventDate"
BLOCK_START, BLOCK_DAYS, BLOCK_BITS = "BlockStart", "BlockDays", "BlockBits"
DIGEST_COLUMN = "config_digest"
STATE_PARTITIONS = (BLOCK_DAYS, BLOCK_START, DIGEST_COLUMN)
LENGTHS = (64, 8, 1)  # block lengths in days, longest first; each is 8 of the next
EPOCH = dt.date(1970, 1, 1)
# Bump when fwpolicy.query.seed.connection_table changes what a stored row means: every block
# is then recomputed on the next night, as after a configuration change.
# 5: file name and protocol in the device facet; 4: the digest is a partition column; 3: blocks
# of the two facets
PARTIALS_FORMAT = 5
# PolicyConfig fields that act only after the reduced table (the roll-up, the aliases, the
# hunting table, the join plan, the read's pruning). Every other field is in the digest, so a
# setting added later invalidates stored blocks by default rather than silently reusing them.
ROLLUP_ONLY_FIELDS = frozenset(
    {"set_cap", "distinct_machines", "server_keys_join", "partition_columns", "aliases", "hunting", "changes"}
)

Block = tuple[dt.date, int]  # (first day, length in days)


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
    return stable_digest({"format": PARTIALS_FORMAT, **kept})


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
    state_table: str
    window_start: dt.date
    window_end: dt.date
    days_computed: list[dt.date]
    days_reused: list[dt.date]
    blocks_built: dict[int, int]  # length in days -> blocks built tonight
    blocks_rolled_up: int
    state_rows_written: int
    policy_rows_written: int
    # Events of the computed days whose Timestamp is unusable: removed rows with no day to be
    # stored under, so they are counted here instead (the run audit of a full run counts them).
    unusable_timestamp_events: int
    seconds: float
    step_seconds: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None  # the night's row in run_audit (and userMetadata of its commits)
    changes: Changes | None = None  # policy_changes written for the window

    def describe(self) -> str:
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.step_seconds.items())
        days = len(self.days_computed) + len(self.days_reused)
        built = (
            ", ".join(f"{n} of {length} days" for length, n in sorted(self.blocks_built.items())) or "none"
        )
        lines = [
            f"nightly firewall_policy, window [{self.window_start}, {self.window_end}) ({days} days)",
            f"  days computed:  {len(self.days_computed)} ({format_days(self.days_computed)})",
            f"  days reused:    {len(self.days_reused)} ({format_days(self.days_reused)})",
            f"  blocks built:   {built}; {self.blocks_rolled_up} blocks rolled up",
            f"  state rows:     {self.state_rows_written} written to {self.state_table}",
            f"  policy rows:    {self.policy_rows_written} written to {self.table}",
        ]
        if self.changes is not None:
            lines.append(f"  policy changes: {self.changes.describe()}")
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


def _aligned(d: dt.date, length: int) -> bool:
    return (d - EPOCH).days % length == 0


def blocks_of(start: dt.date, end: dt.date) -> list[Block]:
    """``[start, end)`` as the fewest aligned blocks, oldest first: from each day, the longest
    block that starts there and fits. A window of ``n`` days has at most ``n // 64 + 14``
    blocks of 8 days or more, plus at most 14 single days."""
    blocks: list[Block] = []
    d = start
    while d < end:
        length = next(n for n in LENGTHS if _aligned(d, n) and d + dt.timedelta(days=n) <= end)
        blocks.append((d, length))
        d += dt.timedelta(days=length)
    return blocks


def children(block: Block) -> list[Block]:
    """The eight blocks one length down that make ``block``."""
    start, length = block
    step = length // 8
    return [(start + dt.timedelta(days=i * step), step) for i in range(8)]


def block_days(block: Block) -> list[dt.date]:
    start, length = block
    return [start + dt.timedelta(days=i) for i in range(length)]


def _by_length(blocks: Iterable[Block]) -> dict[int, list[dt.date]]:
    """Block starts grouped by length; a value that is not a block is an error."""
    by_length: dict[int, list[dt.date]] = {}
    for start, length in blocks:
        if length not in LENGTHS or not _is_day(start):
            raise ValueError(f"not a block: {(start, length)!r}")
        by_length.setdefault(length, []).append(start)
    return by_length


def blocks_predicate(blocks: Iterable[Block]) -> str:
    """``BlockDays = n AND BlockStart IN (DATE'..', ...)`` (ORed per length) for ``replaceWhere``,
    from parsed dates and the fixed lengths only."""
    by_length = _by_length(blocks)
    if not by_length:
        raise ValueError("no blocks given")
    parts = [
        f"({BLOCK_DAYS} = {length} AND {days_predicate(BLOCK_START, starts)})"
        for length, starts in sorted(by_length.items())
    ]
    return " OR ".join(parts)


def _blocks_filter(blocks: Iterable[Block]) -> Column:
    """The same blocks as a Column filter, for reads (partition pruning on both columns)."""
    out = F.lit(False)
    for length, starts in _by_length(blocks).items():
        out = out | (
            (F.col(BLOCK_DAYS) == F.lit(length)) & F.col(BLOCK_START).isin(*(F.lit(s) for s in starts))
        )
    return out


@dataclass(frozen=True)
class BlockPlan:
    """What one night computes: days from events, longer blocks from shorter ones, and the
    blocks the window rolls up."""

    window: list[Block]
    days: list[dt.date]  # one-day blocks computed from the source
    builds: dict[int, list[Block]]  # length -> blocks built from the blocks under them
    reused: list[Block]


def plan_blocks(window: list[Block], stored: set[Block], refresh: set[dt.date]) -> BlockPlan:
    """Which blocks the window needs that cannot be read as stored, and how to make them.

    A stored block is usable unless it holds a day of ``refresh``. A missing block of more
    than a day is built from its eight children, each usable or made the same way."""
    days: set[dt.date] = set(refresh)
    builds: dict[int, set[Block]] = {}
    reused: list[Block] = []

    def usable(block: Block) -> bool:
        return block in stored and not refresh.intersection(block_days(block))

    def make(block: Block) -> None:
        if block[1] == 1:
            days.add(block[0])
            return
        for child in children(block):
            if not usable(child):
                make(child)
        builds.setdefault(block[1], set()).add(block)

    for block in window:
        if usable(block):
            reused.append(block)
        else:
            make(block)
    return BlockPlan(window, sorted(days), {n: sorted(b) for n, b in builds.items()}, reused)


def check_state_layout(spark: SparkSession, path: str) -> None:
    """Refuse a state table partitioned otherwise than ``STATE_PARTITIONS`` (written by an older
    fwpolicy): its blocks cannot be replaced one by one. It holds only derived rows.

    Asked only after a write into it failed: reading the table's detail costs seconds in a new
    process."""
    detail = delta_detail(spark, path)  # one row
    found = tuple(detail["partitionColumns"]) if detail else ()
    if found != STATE_PARTITIONS:
        raise ConfigError(
            f"{path} is partitioned by {', '.join(found) or 'nothing'}, not by "
            f"{', '.join(STATE_PARTITIONS)}: it was written by an older fwpolicy. It holds only "
            "rows derived from the source: delete it, and the next night computes it again."
        )


def stored_blocks(spark: SparkSession, path: str, digest: str, exists: bool) -> set[Block]:
    """Blocks the state table holds under ``digest``.

    Every column read is a partition column, so Spark reads no stored rows: only the files'
    footers (a block is one file)."""
    if not exists or not is_delta_table(spark, path):
        return set()
    rows = (
        read_table(spark, path)
        .where(F.col(DIGEST_COLUMN) == F.lit(digest))
        .select(BLOCK_START, BLOCK_DAYS)
        .distinct()
        .collect()  # one row per stored block: a few hundred dates at most
    )
    return {(r[BLOCK_START], int(r[BLOCK_DAYS])) for r in rows}


def _parent_start(start: Column, length: int) -> Column:
    """The first day of the aligned block of ``length`` days holding day ``start``."""
    index = F.datediff(start, F.lit(EPOCH))
    return F.date_add(F.lit(EPOCH), (F.floor(index / F.lit(length)) * F.lit(length)).cast("int"))


def _shifted(bits: Column, by: Column) -> Column:
    return F.call_function("shiftleft", bits, by)  # F.shiftleft takes only a Python int shift


def day_blocks(day_rows: DataFrame, digest: str) -> DataFrame:
    """Reduced rows keyed by ``EventDate`` -> one-day blocks (the day leaves the key)."""
    return day_rows.select(
        *(F.lit(None).cast("date").alias(c) if c == DAY_COLUMN else F.col(c) for c in day_rows.columns),
        F.col(DAY_COLUMN).alias(BLOCK_START),
        F.lit(1).alias(BLOCK_DAYS),
        F.lit(1).cast("long").alias(BLOCK_BITS),
        F.lit(digest).alias(DIGEST_COLUMN),
    )


def build_blocks(shorter: DataFrame, length: int, digest: str) -> DataFrame:
    """Blocks of ``length`` days from the blocks of ``length // 8`` under them: each child's
    word moves to its offset in the parent, and equal keys merge."""
    parent = _parent_start(F.col(BLOCK_START), length)
    rows = shorter.withColumn("_parent", parent).withColumn(
        BLOCK_BITS, _shifted(F.col(BLOCK_BITS), F.datediff(F.col(BLOCK_START), F.col("_parent")))
    )
    merged = merge_rows(
        rows.drop(BLOCK_START).withColumnRenamed("_parent", "_block"), [BLOCK_BITS], ("_block",)
    )
    return merged.select(
        *(c for c in merged.columns if c != "_block"),
        F.col("_block").alias(BLOCK_START),
        F.lit(length).alias(BLOCK_DAYS),
        F.lit(digest).alias(DIGEST_COLUMN),
    ).select(*shorter.columns)


def roll_up(blocks: DataFrame, start: dt.date, end: dt.date) -> DataFrame:
    """The window's blocks -> the reduced table a run over ``[start, end)`` builds: each block's
    word lands at its offset in the window's ``DayBits<w>`` words, and equal keys merge."""
    offset = F.datediff(F.col(BLOCK_START), F.lit(start))
    q, r = F.floor(offset / F.lit(64)).cast("int"), (offset % F.lit(64)).cast("int")
    bits = F.col(BLOCK_BITS)
    zero = F.lit(0).cast("long")
    words = max(-(-(end - start).days // 64), 1)
    columns = {
        f"{DAY_BITS}{w}": F.when(q == F.lit(w), _shifted(bits, r))
        .when(
            (q == F.lit(w - 1)) & (r > F.lit(0)), F.call_function("shiftrightunsigned", bits, F.lit(64) - r)
        )
        .otherwise(zero)
        for w in range(words)
    }
    rows = blocks.withColumns(columns).drop(BLOCK_START, BLOCK_DAYS, BLOCK_BITS, DIGEST_COLUMN)
    return merge_rows(rows, list(columns))


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
    # The same expression as seed.where_clauses' EventDate (the session time zone is UTC).
    in_days = F.to_date("Timestamp").isin(*(F.lit(d) for d in days))
    return events.where(in_days | unusable)


def _timed(steps: dict[str, float], name: str, began: float) -> float:
    now = time.monotonic()
    steps[name] = now - began
    return now


def run_nightly(spec: NightlySpec, spark: SparkSession | None = None) -> NightlyResult:
    """Update the blocks of ``spec``'s window and replace its partition of each table.

    Like ``tasks.run``: refuses an output inside the source and output tables fwpolicy did not
    create before any work (``ConfigError``), tags every commit with the night's run id, and
    records the night in ``run_audit`` (a ``failed`` row if it fails).
    """
    run_spec = spec.run_spec()
    check_paths(run_spec)
    spark = spark or get_spark()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # days and windows are UTC
    began = step = time.monotonic()
    steps: dict[str, float] = {}
    cfg = spec.policy
    state_path = table_path(spec.output, STATE_TABLE)
    existing = check_outputs(spark, spec.output, (STATE_TABLE, *WINDOW_TABLES, AUDIT_TABLE))
    audit = RunAudit(spark, "nightly", run_spec, table_exists=AUDIT_TABLE in existing)
    rules = load_rules(cfg.exclusions) if cfg.exclusions else None  # a bad file fails before work
    digest = partials_digest(cfg, rules)
    start, end = spec.window_start, spec.window_end
    state_exists = STATE_TABLE in existing
    try:
        with commit_tag(spark, audit.commit_tag):
            # 1. Which blocks the window needs, and which must be made.
            stored = stored_blocks(spark, state_path, digest, state_exists)
            plan = plan_blocks(blocks_of(start, end), stored, set(spec.refresh()))
            built = {length: len(b) for length, b in plan.builds.items()}
            log.info(
                "nightly window [%s, %s]: computing days %s; building %s; %d blocks to roll up (config %s)",
                start,
                spec.date,
                format_days(plan.days),
                built or "no blocks",
                len(plan.window),
                digest,
            )
            step = _timed(steps, "plan", step)

            # 2. One-day blocks of the days to compute: one read of the source, one commit.
            state_rows = unusable_events = 0
            if plan.days:
                events = read_days(spark, spec, plan.days)
                excluded, tags = rules.expressions(set(events.columns)) if rules else (None, None)
                audit.read(events)
                day_rows = connection_table(where_clauses(events, cfg, excluded, tags))
                day_rows = day_rows.persist(StorageLevel.MEMORY_AND_DISK)
                try:
                    stored_rows = day_blocks(day_rows.where(F.col(DAY_COLUMN).isNotNull()), digest)
                    # One file per block rather than one per task and block: nights read them all.
                    stored_rows = stored_rows.repartition(BLOCK_START).persist(StorageLevel.MEMORY_AND_DISK)
                    with read_errors(spark, spec.source, events):  # the days are read here, once
                        state_rows += stored_rows.count()
                    try:
                        replace_where(
                            stored_rows,
                            state_path,
                            blocks_predicate((d, 1) for d in plan.days),
                            STATE_PARTITIONS,
                            state_exists,
                        )
                    except Exception:
                        if state_exists:
                            check_state_layout(spark, state_path)  # the likelier cause, named
                        raise
                    stored_rows.unpersist()
                    state_exists = True
                    # Rows without a day are removed rows (unusable Timestamp); count their events.
                    lost = (
                        day_rows.where(F.col(DAY_COLUMN).isNull())
                        .agg(F.sum("Connections").alias("n"))
                        .first()
                    )
                    unusable_events = int((lost["n"] if lost else None) or 0)
                    audit.count(from_connections(day_rows, cfg, (start, end)))  # tonight's events
                finally:
                    day_rows.unpersist()
                if unusable_events:
                    log.warning(
                        "%d events of %s have an unusable Timestamp: removed, not stored",
                        unusable_events,
                        format_days(plan.days),
                    )
            step = _timed(steps, "days", step)

            # 3. Longer blocks from the blocks under them, shortest first.
            for length in sorted(plan.builds, key=int):
                blocks = plan.builds[length]
                shorter = [c for b in blocks for c in children(b)]
                source = read_table(spark, state_path).where(_blocks_filter(shorter))
                source = source.where(F.col(DIGEST_COLUMN) == F.lit(digest))
                made = build_blocks(source, length, digest).repartition(BLOCK_START)
                made = made.persist(StorageLevel.MEMORY_AND_DISK)
                state_rows += made.count()
                replace_where(made, state_path, blocks_predicate(blocks), STATE_PARTITIONS, True)
                made.unpersist()
            step = _timed(steps, "blocks", step)

            # 4. Roll the window up, as run() writes a window from its reduced table.
            window_blocks = (
                read_table(spark, state_path)
                .where(_blocks_filter(plan.window))
                .where(F.col(DIGEST_COLUMN) == F.lit(digest))
            )
            rolled = roll_up(served_only(window_blocks, cfg), start, end)
            query = from_connections(rolled, cfg, (start, end), materialized)
            written = write_window_tables(query, spec.output, existing)
            policy_rows = written.rows
            step = _timed(steps, "roll-up", step)
    except SourceError:
        raise  # bad input: one error line, and no audit row
    except Exception:
        audit.failed()  # best effort: a 'failed' row in run_audit, then the original error
        raise

    computed = set(plan.days)
    result = NightlyResult(
        table=table_path(spec.output, POLICY_TABLE),
        state_table=state_path,
        window_start=start,
        window_end=end,
        days_computed=[d for d in spec.window() if d in computed],
        days_reused=[d for d in spec.window() if d not in computed],
        blocks_built=built,
        blocks_rolled_up=len(plan.window),
        state_rows_written=state_rows,
        policy_rows_written=policy_rows,
        unusable_timestamp_events=unusable_events,
        seconds=time.monotonic() - began,
        step_seconds=steps,
        run_id=audit.run_id,
        changes=written.changes,
    )
    log.info(
        "nightly wrote %d policy rows in %.1fs (%s)",
        policy_rows,
        result.seconds,
        ", ".join(f"{k} {v:.1f}s" for k, v in steps.items()),
    )
    audit.finish(policy_rows)
    return result
