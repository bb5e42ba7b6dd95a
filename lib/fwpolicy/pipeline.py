"""The firewall-policy job: read a window, classify, summarise, write one Delta partition.

``build_policy`` is the pure ``DataFrame -> DataFrame`` part (tests call it on in-memory
frames); ``run`` adds the reading, the writing and the figures a user wants to see.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fwpolicy.audit import AuditCounts, RunAudit, redact
from fwpolicy.classify import connections, match_server_keys
from fwpolicy.config import ConfigError, PolicyConfig, RunSpec
from fwpolicy.exclusions import excluded_connections, load_rules
from fwpolicy.hunting import HUNTING_TABLE, unusual_programs
from fwpolicy.session import get_spark
from fwpolicy.sink import ensure_owned_under, read_table, replace_partition, table_path
from fwpolicy.source import read_window
from fwpolicy.summarize import summarize, with_alias

log = logging.getLogger(__name__)

POLICY_TABLE = "firewall_policy"
EXCLUDED_TABLE = "excluded_connections"


@dataclass(frozen=True)
class RunResult:
    """What a run wrote, for the summary a user reads and for tests."""

    table: str
    window_start: dt.date
    window_end: dt.date
    rows_written: int
    seconds: float
    run_id: str | None = None  # the run's row in run_audit (and userMetadata of its commit)
    audit: AuditCounts | None = None  # where the rows read went (fwpolicy.audit)


def policy_from_connections(conns: DataFrame, cfg: PolicyConfig, start: dt.date, end: dt.date) -> DataFrame:
    """Connection table -> ``firewall_policy`` rows (traffic excluded by a rule left out).

    ``conns`` is read several times (server keys, the join, and each branch of the summary),
    so callers pass a persisted frame at scale."""
    return summarize(match_server_keys(conns, cfg).where(F.col("Excluded").isNull()), cfg, start, end)


def build_policy(events: DataFrame, cfg: PolicyConfig, start: dt.date, end: dt.date) -> DataFrame:
    """Events of ``[start, end)`` -> ``firewall_policy`` rows (lazy; nothing runs yet)."""
    return policy_from_connections(connections(events, cfg, window=(start, end)), cfg, start, end)


@contextmanager
def persisted(df: DataFrame) -> Iterator[DataFrame]:
    """Keep ``df`` for the branches that read it, so the source is scanned once; then free it.

    MEMORY_AND_DISK: at enterprise scale the connection table spills rather than fails.
    """
    kept = df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        yield kept
    finally:
        kept.unpersist()


def write_window_tables(
    conns: DataFrame,
    cfg: PolicyConfig,
    output: str,
    start: dt.date,
    end: dt.date,
    tag: str,
    excluding: bool,
    audit: RunAudit | None = None,
) -> AuditCounts | None:
    """Replace the ``window_end = end`` partition of the three window tables under ``output``.

    The server-key join and the aliases are computed once and kept (``persisted``) for the
    three tables and the audit, so each table costs only its own aggregations. ``excluding``
    says whether any rule can exclude traffic; when none can, ``excluded_connections`` gets an
    empty partition without reading anything (it is still written, so no stale exclusions
    outlive a change of rules). With ``audit``, the fates of ``conns``' rows are counted there too
    (``RunAudit.count``) and returned.
    """
    with persisted(with_alias(match_server_keys(conns, cfg), cfg)) as rows:
        policy = summarize(rows.where(F.col("Excluded").isNull()), cfg, start, end)
        replace_partition(policy, table_path(output, POLICY_TABLE), end, tag)
        # Every connection, excluded or not: malware can borrow a name an exclusion trusts.
        hunting = unusual_programs(rows, cfg, start, end, cfg.hunting)
        replace_partition(hunting, table_path(output, HUNTING_TABLE), end, tag)
        excluded = excluded_connections(rows if excluding else rows.where(F.lit(False)), cfg, start, end)
        replace_partition(excluded, table_path(output, EXCLUDED_TABLE), end, tag)
        return audit.count(conns, cfg, rows) if audit is not None else None


def _is_within(child: str, parent: str) -> bool:
    import os.path

    if "://" in child or "://" in parent:
        c, p = child.rstrip("/") + "/", parent.rstrip("/") + "/"
        return c.startswith(p)
    c, p = os.path.realpath(child), os.path.realpath(parent)
    return c == p or c.startswith(p.rstrip(os.sep) + os.sep)


def check_paths(spec: RunSpec) -> None:
    """Refuse an output root inside (or equal to) the source: a run must never write its input."""
    if _is_within(spec.output, spec.source):
        raise ConfigError(f"output {spec.output} is inside the source {spec.source}; choose another")


def written_rows(spark: SparkSession, path: str, user_metadata: str | None = None) -> int:
    """Rows the last commit wrote, from Delta's own commit metrics (no table scan).

    With ``user_metadata``: the rows of the latest commit that carries it, so a concurrent
    run's commit landing just after ours is not mistaken for ours."""
    from delta.tables import DeltaTable

    # history(n) is a few small rows of commit metadata, not event data.
    commits = DeltaTable.forPath(spark, path).history(1 if user_metadata is None else 50)
    if user_metadata is not None:
        commits = commits.where(F.col("userMetadata") == F.lit(user_metadata))
    last = commits.select("operationMetrics").first()
    metrics = (last["operationMetrics"] or {}) if last else {}
    return int(metrics.get("numOutputRows", 0))


def run(spec: RunSpec, spark: SparkSession | None = None) -> RunResult:
    """Compute the policy of ``spec``'s window and replace its partition of ``firewall_policy``.

    Then append the run's row to ``run_audit`` (its own commit). Output tables fwpolicy did not
    create are refused before any work (``ConfigError``)."""
    check_paths(spec)
    spark = spark or get_spark()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # windows and dates are UTC
    began = time.monotonic()
    cfg = spec.policy
    path = table_path(spec.output, POLICY_TABLE)
    # Refuse, before any work, to overwrite tables at the output root that fwpolicy did not create.
    ensure_owned_under(spark, spec.output, (POLICY_TABLE, EXCLUDED_TABLE, HUNTING_TABLE))
    audit = RunAudit(spark, "run", spec)  # refuses a foreign run_audit too
    rules = load_rules(cfg.exclusions) if cfg.exclusions else None  # a bad file fails before work
    events = read_window(spark, spec.source, spec.source_format, spec.start, spec.end, cfg.partition_columns)
    excluded, tags = rules.expressions(set(events.columns)) if rules else (None, None)
    audit.read(events)
    tag = audit.commit_tag
    log.info("computing %s for [%s, %s) from %s", POLICY_TABLE, spec.start, spec.end, redact(spec.source))
    try:
        with persisted(connections(events, cfg, excluded, tags, (spec.start, spec.end))) as conns:
            counts = write_window_tables(
                conns, cfg, spec.output, spec.start, spec.end, tag, excluded is not None, audit
            )
        rows_written = written_rows(spark, path, tag)
    except Exception:
        audit.failed()  # best effort: a 'failed' row in run_audit, then the original error
        raise
    result = RunResult(
        path, spec.start, spec.end, rows_written, time.monotonic() - began, audit.run_id, counts
    )
    log.info("wrote %d rows to %s in %.1fs", result.rows_written, redact(path), result.seconds)
    audit.finish(result.rows_written)  # --- end audit
    return result


def top_rows(spark: SparkSession, result: RunResult, per_direction: int = 5) -> list[dict]:
    """The most widespread programs per direction of a written window (a small, bounded read)."""
    table = read_table(spark, result.table).where(F.col("window_end") == F.lit(result.window_end))
    rows = []
    for direction in ("Inbound", "Outbound"):
        top = (
            table.where(F.col("Directionality") == F.lit(direction))
            .orderBy(F.desc("DistinctMachines"), F.desc("ConnectionCount"), "AliasPath")
            .limit(per_direction)
        )
        rows.extend(r.asDict() for r in top.collect())  # at most per_direction summary rows
    return rows
