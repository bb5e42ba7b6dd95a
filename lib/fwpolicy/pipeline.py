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

from fwpolicy.classify import connections, match_server_keys
from fwpolicy.config import ConfigError, PolicyConfig, RunSpec
from fwpolicy.session import get_spark
from fwpolicy.sink import read_table, replace_partition, table_path
from fwpolicy.source import read_window
from fwpolicy.summarize import summarize

log = logging.getLogger(__name__)

POLICY_TABLE = "firewall_policy"


@dataclass(frozen=True)
class RunResult:
    """What a run wrote, for the summary a user reads and for tests."""

    table: str
    window_start: dt.date
    window_end: dt.date
    rows_written: int
    seconds: float


def policy_from_connections(conns: DataFrame, cfg: PolicyConfig, start: dt.date, end: dt.date) -> DataFrame:
    """Connection table -> ``firewall_policy`` rows (traffic excluded by a rule left out).

    ``conns`` is read several times (server keys, the join, ports, IPs, URLs), so callers
    pass a persisted frame at scale."""
    matched = match_server_keys(conns, cfg).where(F.col("Excluded").isNull())
    return summarize(matched, cfg, start, end)


def build_policy(events: DataFrame, cfg: PolicyConfig, start: dt.date, end: dt.date) -> DataFrame:
    """Events of ``[start, end)`` -> ``firewall_policy`` rows (lazy; nothing runs yet)."""
    return policy_from_connections(connections(events, cfg), cfg, start, end)


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


def written_rows(spark: SparkSession, path: str) -> int:
    """Rows the last commit wrote, from Delta's own commit metrics (no table scan)."""
    from delta.tables import DeltaTable

    # history(1) is one small row of commit metadata, not event data.
    last = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()
    metrics = (last["operationMetrics"] or {}) if last else {}
    return int(metrics.get("numOutputRows", 0))


def run(spec: RunSpec, spark: SparkSession | None = None) -> RunResult:
    """Compute the policy of ``spec``'s window and replace its partition of ``firewall_policy``."""
    check_paths(spec)
    spark = spark or get_spark()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # windows and dates are UTC
    began = time.monotonic()
    cfg = spec.policy
    events = read_window(spark, spec.source, spec.source_format, spec.start, spec.end, cfg.partition_columns)
    path = table_path(spec.output, POLICY_TABLE)
    log.info("computing %s for [%s, %s) from %s", POLICY_TABLE, spec.start, spec.end, spec.source)
    with persisted(connections(events, cfg)) as conns:
        replace_partition(policy_from_connections(conns, cfg, spec.start, spec.end), path, spec.end)
    result = RunResult(path, spec.start, spec.end, written_rows(spark, path), time.monotonic() - began)
    log.info("wrote %d rows to %s in %.1fs", result.rows_written, path, result.seconds)
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
