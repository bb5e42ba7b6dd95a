"""Summarise matched connections by ``(Directionality, AliasPath)``, as KQL's ``summarize``.

``makeset`` keeps at most 128 values in an undefined order. Output here must be reproducible,
so sets are sorted and the kept values are the smallest in that order; ``PortCount`` and
``RemoteIPCount`` give the full distinct counts so nothing is lost silently.

Beyond the KQL columns, each row carries the evidence a reviewer weighs: first and last
sighting, distinct days and device-days (Defender de-duplicates repeated connections, so these
are sounder than ``ConnectionCount``), protocols, the top remote URLs of outbound traffic, an
example file name and path, and the benign-traffic tags that matched.

Remote IPs are not bounded (a browser across 100k devices meets millions), so they are made
distinct and ranked with a window instead of being gathered into one array per group.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fwpolicy.aliasing import alias_expr
from fwpolicy.classify import OUTBOUND, PATH
from fwpolicy.config import PolicyConfig

GROUP = ("Directionality", "AliasPath")
TOP_URLS = 5
POLICY_COLUMNS = (
    "Directionality",
    "AliasPath",
    "ConnectionCount",
    "DistinctMachines",
    "Ports",
    "RemoteIPs",
    "PortCount",
    "RemoteIPCount",
    "FirstSeen",
    "LastSeen",
    "DaysObserved",
    "DeviceDays",
    "Protocols",
    "TopRemoteUrls",
    "ExampleFileName",
    "ExamplePath",
    "Tags",
    "window_start",
    "window_end",
)


def add_alias(conns: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """``AliasPath`` of each connection's folder path, under the configured profile.

    The alias is computed once per distinct path and joined back: a fleet has far fewer
    programs than connections, and the summary's branches all read the result. Adaptive
    execution broadcasts the path table when it is small, as it usually is.
    """
    paths = conns.select(PATH).distinct()
    aliases = paths.withColumn("AliasPath", alias_expr(PATH, cfg.profile, cfg))
    return conns.join(aliases, on=PATH, how="inner")


def capped_sorted(values: Column, cap: int) -> Column:
    """The first ``cap`` values of an array, in ascending order."""
    return F.slice(F.sort_array(values), 1, cap)


def union_of(arrays: str) -> Column:
    """Set union of an array column over a group (for per-row sets made by an earlier level)."""
    return F.array_distinct(F.flatten(F.collect_list(arrays)))


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


def top_weighted(df: DataFrame, keys: tuple[str, ...], values: str, weight: str, n: int) -> DataFrame:
    """Per group: the ``n`` values of an array column with the largest total ``weight``.

    Ties break by value, so the result is deterministic. Columns: ``keys``, ``Top<values>``.
    """
    exploded = df.select(*keys, F.explode(values).alias("_value"), F.col(weight))
    totals = exploded.groupBy(*keys, "_value").agg(F.sum(weight).alias("_weight"))
    order = Window.partitionBy(*keys).orderBy(F.desc("_weight"), "_value")
    ranked = totals.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= n)
    return ranked.groupBy(*keys).agg(
        F.transform(F.sort_array(F.collect_list(F.struct("_rank", "_value"))), lambda s: s["_value"]).alias(
            f"Top{values}"
        )
    )


def summarize(
    matched: DataFrame,
    cfg: PolicyConfig,
    window_start: dt.date,
    window_end: dt.date,
    group: tuple[str, ...] = GROUP,
) -> DataFrame:
    """Policy rows for one window: ``group`` columns, then ``POLICY_COLUMNS`` after the group."""
    aliased = add_alias(matched, cfg)
    machines = (
        F.countDistinct("DeviceId")
        if cfg.distinct_machines == "exact"
        else F.approx_count_distinct("DeviceId")
    )
    # Level 1: one row per program, device and day; level 2 counts devices, days and pairs.
    device_days = aliased.groupBy(*group, "DeviceId", "EventDate").agg(
        F.sum("Connections").alias("Connections"),
        F.collect_set("Port").alias("_ports"),
        F.min("FirstSeen").alias("FirstSeen"),
        F.max("LastSeen").alias("LastSeen"),
        F.min("FileName").alias("FileName"),
        F.min(PATH).alias("ExamplePath"),
        union_of("Protocols").alias("Protocols"),
        union_of("Tags").alias("Tags"),
    )
    main = device_days.groupBy(*group).agg(
        F.sum("Connections").cast("long").alias("ConnectionCount"),
        machines.cast("long").alias("DistinctMachines"),
        F.countDistinct("EventDate").cast("long").alias("DaysObserved"),
        F.count(F.lit(1)).cast("long").alias("DeviceDays"),
        union_of("_ports").alias("_ports"),
        F.min("FirstSeen").alias("FirstSeen"),
        F.max("LastSeen").alias("LastSeen"),
        F.min("FileName").alias("ExampleFileName"),
        F.min("ExamplePath").alias("ExamplePath"),
        F.sort_array(union_of("Protocols")).alias("Protocols"),
        F.sort_array(union_of("Tags")).alias("Tags"),
    )
    ips = capped_distinct(aliased, group, "RemoteIP", cfg.set_cap)
    outbound = aliased.where(F.col("Directionality") == F.lit(OUTBOUND))
    urls = top_weighted(outbound, group, "RemoteUrls", "Connections", TOP_URLS)
    no_urls = F.array().cast("array<string>")
    return (
        main.join(ips, on=list(group), how="inner")
        .join(urls, on=list(group), how="left")
        .withColumn("TopRemoteUrls", F.coalesce(F.col("TopRemoteUrls"), no_urls))
        .withColumn("Ports", capped_sorted(F.col("_ports"), cfg.set_cap))
        .withColumn("PortCount", F.size("_ports").cast("long"))
        .withColumn("window_start", F.lit(window_start))
        .withColumn("window_end", F.lit(window_end))
        .select(*group, *(c for c in POLICY_COLUMNS if c not in group))
    )
