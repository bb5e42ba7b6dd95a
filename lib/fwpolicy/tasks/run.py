"""``fwpolicy run``: read a window, run the seed query once, write every table of the window.

The window tables: ``firewall_policy``, ``unusual_programs``, ``excluded_connections`` and
``policy_changes``, each partitioned by ``window_end``; then a row of ``run_audit``.

The cost of a run is its scan plus a fixed part, so the fixed part is kept small:

* the output tables are checked once, before any work (``sink.check_outputs``), and a table
  that does not exist is created with its first rows in one commit;
* the query is computed once (``seed.seed_query``), each step kept as it is computed
  (``seed.materialized``), and ``firewall_policy``, ``unusual_programs``,
  ``excluded_connections`` and the audit all read it;
* the three window tables are written side by side from threads of this driver: each write
  is a few small Spark jobs and Delta commits whose latency is mostly the driver's, so they
  overlap well even on two cores;
* the rows written are counted from the persisted summary, not read back from Delta;
* ``policy_changes`` compares the policy with the latest earlier window of ``firewall_policy``
  (``review.changes``), read before this window's write.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fwpolicy.config import CHANGE_TYPES, ConfigError, RunSpec
from fwpolicy.io.session import get_spark
from fwpolicy.io.sink import (
    PARTITION_COLUMN,
    check_outputs,
    commit_tag,
    create_owned,
    replace_partition,
    table_path,
)
from fwpolicy.io.source import SourceError, read_errors, read_window
from fwpolicy.io.storage import is_within
from fwpolicy.query.seed import SeedQuery, materialized, seed_query
from fwpolicy.review.changes import (
    CHANGES_TABLE,
    POLICY_TABLE,
    changes_schema,
    policy_changes,
    policy_window,
    previous_window_end,
    window_ends,
)
from fwpolicy.review.exclusions import load_rules
from fwpolicy.review.hunting import HUNTING_TABLE, unusual_programs
from fwpolicy.tasks.audit import AUDIT_TABLE, AuditCounts, RunAudit, redact

log = logging.getLogger(__name__)

EXCLUDED_TABLE = "excluded_connections"
WINDOW_TABLES = (POLICY_TABLE, HUNTING_TABLE, EXCLUDED_TABLE, CHANGES_TABLE)
TOP_PER_DIRECTION = 5


@dataclass(frozen=True)
class RunResult:
    """What a run wrote, for the summary a user reads and for tests."""

    table: str
    window_start: dt.date
    window_end: dt.date
    rows_written: int
    seconds: float
    run_id: str | None = None  # the run's row in run_audit (and userMetadata of its commits)
    audit: AuditCounts | None = None  # where the rows read went (fwpolicy.tasks.audit)
    top: list[dict] = field(default_factory=list)  # the most widespread programs per direction
    changes: Changes | None = None  # policy_changes written for this window


@dataclass(frozen=True)
class Changes:
    """What ``policy_changes`` holds for a window: the window compared against (None for the
    first window under the output root) and the number of changes of each type."""

    previous_window_end: dt.date | None
    counts: dict[str, int]

    def describe(self) -> str:
        if self.previous_window_end is None:
            return "none: the first window here, with no earlier window_end to compare with"
        listed = ", ".join(f"{n} {kind}" for kind, n in self.counts.items() if n)
        return f"since {self.previous_window_end}: {listed or 'none'}"


@dataclass(frozen=True)
class WindowWrite:
    """What ``write_window_tables`` wrote."""

    rows: int  # firewall_policy rows
    top: list[dict]
    changes: Changes


def check_paths(spec: RunSpec) -> None:
    """Refuse an output root inside (or equal to) the source: a run must never write its input."""
    if is_within(spec.output, spec.source):
        raise ConfigError(f"output {spec.output} is inside the source {spec.source}; choose another")


def top_programs(policy: DataFrame, per_direction: int = TOP_PER_DIRECTION) -> list[dict]:
    """The most widespread programs per direction: a handful of summary rows, for the console."""
    rows = []
    for direction in ("Inbound", "Outbound"):
        top = (
            policy.where(F.col("Directionality") == F.lit(direction))
            .orderBy(F.desc("DistinctMachines"), F.desc("ConnectionCount"), "AliasPath")
            .limit(per_direction)
        )
        rows.extend(r.asDict() for r in top.collect())  # at most per_direction summary rows
    return rows


def in_parallel(actions: dict[str, Callable[[], object]]) -> dict[str, object]:
    """Run independent actions (each some Spark jobs and a Delta commit) from driver threads.

    The first failure is raised once every action has ended, so no write is left running."""
    with ThreadPoolExecutor(max_workers=len(actions), thread_name_prefix="fwpolicy-write") as pool:
        futures = {name: pool.submit(action) for name, action in actions.items()}
        return {name: f.result() for name, f in futures.items()}


def previous_policy(
    spark: SparkSession, output: str, end: dt.date, exists: bool
) -> tuple[dt.date | None, DataFrame | None]:
    """The latest earlier window of ``firewall_policy`` and its rows (read before this window's
    write, so a rerun compares with the same window), or ``(None, None)`` for a first window."""
    if not exists:
        return None, None
    path = table_path(output, POLICY_TABLE)
    previous = previous_window_end(window_ends(spark, path), end)
    return previous, (policy_window(spark, path, previous) if previous else None)


def write_window_tables(
    query: SeedQuery,
    output: str,
    existing: set[str],
    audit: RunAudit | None = None,
) -> WindowWrite:
    """Replace the query window's partition of each window table under ``output``.

    ``query``: computed and kept (``seed.materialized``); ``existing``: the tables
    ``check_outputs`` found. The tables, the audit counts and the top programs are computed
    from it side by side; ``policy_changes`` compares the policy with the latest earlier window.
    """
    end = query.window[1]
    policy = query.policy()
    spark = policy.sparkSession
    previous_end, before = previous_policy(spark, output, end, POLICY_TABLE in existing)
    changes = policy_changes(before, policy, previous_end, end, query.cfg.changes).cache()
    tables = {
        POLICY_TABLE: policy,
        HUNTING_TABLE: unusual_programs(query),
        EXCLUDED_TABLE: query.excluded(),
        CHANGES_TABLE: changes,
    }

    def writer(name: str, df: DataFrame) -> Callable[[], None]:
        return lambda: replace_partition(df, table_path(output, name), end, name in existing)

    actions: dict[str, Callable[[], object]] = {name: writer(name, df) for name, df in tables.items()}
    if previous_end is None and CHANGES_TABLE not in existing:
        # A first window has no changes: the table is created empty (one commit of no rows).
        path = table_path(output, CHANGES_TABLE)
        actions[CHANGES_TABLE] = lambda: create_owned(spark, path, changes_schema(), (PARTITION_COLUMN,))
    if audit is not None:
        actions["audit"] = lambda: audit.count(query)
    actions["top"] = lambda: top_programs(policy)
    actions["rows"] = policy.count  # the summary is kept: a count of a few rows
    if previous_end is not None:
        actions["changes"] = lambda: change_counts(changes)
    done = in_parallel(actions)
    changes.unpersist()
    counts = done.get("changes") or dict.fromkeys(CHANGE_TYPES, 0)
    return WindowWrite(done["rows"], done["top"], Changes(previous_end, counts))  # type: ignore[arg-type]


def change_counts(changes: DataFrame) -> dict[str, int]:
    """Changes per type, every type present (a handful of rows)."""
    counts = {
        r["ChangeType"]: r["n"]
        for r in changes.groupBy("ChangeType").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    return {kind: int(counts.get(kind, 0)) for kind in CHANGE_TYPES}


def run(spec: RunSpec, spark: SparkSession | None = None) -> RunResult:
    """Compute the tables of ``spec``'s window and replace their partitions.

    Then append the run's row to ``run_audit`` (its own commit). Output tables fwpolicy did not
    create are refused before any work (``ConfigError``)."""
    check_paths(spec)
    spark = spark or get_spark()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # windows and dates are UTC
    began = time.monotonic()
    cfg = spec.policy
    existing = check_outputs(spark, spec.output, (*WINDOW_TABLES, AUDIT_TABLE))
    audit = RunAudit(spark, "run", spec, table_exists=AUDIT_TABLE in existing)
    rules = load_rules(cfg.exclusions) if cfg.exclusions else None  # a bad file fails before work
    events = read_window(spark, spec.source, spec.source_format, spec.start, spec.end, cfg.partition_columns)
    excluded, tags = rules.expressions(set(events.columns)) if rules else (None, None)
    audit.read(events)
    log.info("computing %s for [%s, %s) from %s", POLICY_TABLE, spec.start, spec.end, redact(spec.source))
    try:
        with read_errors(spark, spec.source, events):  # the source is read here, once
            query = seed_query(events, cfg, (spec.start, spec.end), excluded, tags, materialized)
        with commit_tag(spark, audit.commit_tag):
            written = write_window_tables(query, spec.output, existing, audit)
    except SourceError:
        raise  # bad input: one error line, and nothing written (no audit row either)
    except Exception:
        audit.failed()  # best effort: a 'failed' row in run_audit, then the original error
        raise
    path = table_path(spec.output, POLICY_TABLE)
    result = RunResult(
        path,
        spec.start,
        spec.end,
        written.rows,
        time.monotonic() - began,
        audit.run_id,
        audit.counts,
        written.top,
        written.changes,
    )
    log.info("wrote %d rows to %s in %.1fs", result.rows_written, redact(path), result.seconds)
    audit.finish(result.rows_written)
    return result
