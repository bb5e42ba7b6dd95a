"""Summarise classified connections by ``(Directionality, AliasPath)``, as KQL's ``summarize``.

``makeset`` keeps at most 128 values in an undefined order. Output here must be reproducible,
so sets are sorted and the kept values are the smallest in that order; ``PortCount`` and
``RemoteIPCount`` give the full distinct counts so nothing is lost silently.

Ports take at most 65,536 values, so a ``collect_set`` per group is bounded. Remote IPs are
not (a browser across 100k devices meets millions), so they are made distinct and ranked
with a window instead of being gathered into one unbounded array per group.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fwpolicy.aliasing import alias_expr
from fwpolicy.classify import PATH
from fwpolicy.config import PolicyConfig

GROUP = ("Directionality", "AliasPath")
POLICY_COLUMNS = (
    "Directionality",
    "AliasPath",
    "ConnectionCount",
    "DistinctMachines",
    "Ports",
    "RemoteIPs",
    "PortCount",
    "RemoteIPCount",
    "window_start",
    "window_end",
)


def add_alias(connections: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """``AliasPath`` of each connection's folder path, under the configured profile."""
    return connections.withColumn("AliasPath", alias_expr(PATH, cfg.profile))


def capped_sorted_set(values: Column, cap: int) -> Column:
    """The first ``cap`` values of a set, in ascending order."""
    return F.slice(F.sort_array(values), 1, cap)


def capped_distinct(df: DataFrame, keys: tuple[str, ...], value: str, cap: int) -> DataFrame:
    """Per group of ``keys``: the ``cap`` smallest distinct ``value``s and their full count.

    Columns: ``keys``, ``<value>s`` (sorted array), ``<value>Count`` (long).
    """
    distinct = df.select(*keys, value).where(F.col(value).isNotNull()).distinct()
    ranked = distinct.withColumn("_rank", F.row_number().over(Window.partitionBy(*keys).orderBy(value)))
    return ranked.groupBy(*keys).agg(
        F.sort_array(F.collect_list(F.when(F.col("_rank") <= cap, F.col(value)))).alias(f"{value}s"),
        F.max("_rank").cast("long").alias(f"{value}Count"),
    )


def summarize(
    connections: DataFrame, cfg: PolicyConfig, window_start: dt.date, window_end: dt.date
) -> DataFrame:
    """The ``firewall_policy`` rows for one window, columns in ``POLICY_COLUMNS`` order."""
    aliased = add_alias(connections, cfg)
    machines = (
        F.countDistinct("DeviceId")
        if cfg.distinct_machines == "exact"
        else F.approx_count_distinct("DeviceId")
    )
    main = aliased.groupBy(*GROUP).agg(
        F.sum("Connections").cast("long").alias("ConnectionCount"),
        machines.cast("long").alias("DistinctMachines"),
        F.collect_set("Port").alias("_ports"),
    )
    ips = capped_distinct(aliased, GROUP, "RemoteIP", cfg.set_cap)
    return (
        main.join(ips, on=list(GROUP), how="inner")
        .withColumn("Ports", capped_sorted_set(F.col("_ports"), cfg.set_cap))
        .withColumn("PortCount", F.size("_ports").cast("long"))
        .withColumn("window_start", F.lit(window_start))
        .withColumn("window_end", F.lit(window_end))
        .select(*POLICY_COLUMNS)
    )
