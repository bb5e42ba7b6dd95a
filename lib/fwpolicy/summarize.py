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
from fwpolicy.classify import (
    ADDRESS,
    DESCRIPTOR,
    DEVICE,
    INBOUND_DETAIL,
    OUTBOUND,
    PATH,
    day_bit_columns,
    day_bits,
)
from fwpolicy.config import PolicyConfig

GROUP = ("Directionality", "AliasPath")
TOP_URLS = 5
# The seed KQL query's own columns, the ones other engines are compared on (bench/run.py).
KQL_COLUMNS = (
    "Directionality",
    "AliasPath",
    "ConnectionCount",
    "DistinctMachines",
    "Ports",
    "RemoteIPs",
    "PortCount",
    "RemoteIPCount",
)
POLICY_COLUMNS = (
    *KQL_COLUMNS,
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


def alias_table(rows: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """``(path, AliasPath)`` for each distinct folder path of ``rows``, under the profile.

    The alias is computed once per distinct path: a fleet has far fewer programs than
    connections. Adaptive execution broadcasts the table when it is small."""
    return rows.select(PATH).distinct().withColumn("AliasPath", alias_expr(PATH, cfg.profile, cfg))


def with_alias(rows: DataFrame, cfg: PolicyConfig) -> DataFrame:
    """``rows`` with the ``AliasPath`` of each folder path; rows that have one already are
    returned as they are (``pipeline.write_window_tables`` aliases once for every table)."""
    if "AliasPath" in rows.columns:
        return rows
    return rows.join(alias_table(rows, cfg), on=PATH, how="inner")


def capped_sorted(values: Column, cap: int) -> Column:
    """The first ``cap`` values of an array, in ascending order."""
    return F.slice(F.sort_array(values), 1, cap)


def capped_distinct(df: DataFrame, keys: tuple[str, ...], value: str, cap: int) -> DataFrame:
    """Per group of ``keys``: the ``cap`` smallest distinct ``value``s and their full count.

    Columns: ``keys``, ``<value>s`` (sorted array), ``<value>Count`` (long). A group with only
    null values has no row. Remote IPs are not bounded (a browser across 100k devices meets
    millions), so values are ranked with a window rather than gathered in one array per group.
    """
    distinct = df.select(*keys, value).where(F.col(value).isNotNull()).distinct()
    ranked = distinct.withColumn("_rank", F.row_number().over(Window.partitionBy(*keys).orderBy(value)))
    return ranked.groupBy(*keys).agg(
        F.sort_array(F.collect_list(F.when(F.col("_rank") <= cap, F.col(value)))).alias(f"{value}s"),
        F.max("_rank").cast("long").alias(f"{value}Count"),
    )


def top_weighted(df: DataFrame, keys: tuple[str, ...], value: str, weight: str, n: int) -> DataFrame:
    """Per group: the ``n`` non-empty ``value``s with the largest total ``weight``.

    Ties break by value, so the result is deterministic. Columns: ``keys``, ``Top<value>s``.
    """
    totals = df.where(F.col(value) != F.lit("")).groupBy(*keys, value).agg(F.sum(weight).alias("_weight"))
    order = Window.partitionBy(*keys).orderBy(F.desc("_weight"), value)
    ranked = totals.withColumn("_rank", F.row_number().over(order)).where(F.col("_rank") <= n)
    return ranked.groupBy(*keys).agg(
        F.transform(F.sort_array(F.collect_list(F.struct("_rank", value))), lambda s: s[value]).alias(
            f"Top{value}s"
        )
    )


def facet(rows: DataFrame, which: int) -> DataFrame:
    """The rows of one facet of the connection table (``classify.FACETS``), and the inbound
    rows, which carry every key column and count as rows of each facet."""
    return rows.where(F.col("Facet").isin(which, INBOUND_DETAIL))


def with_day_bits(rows: DataFrame, window_start: dt.date, window_end: dt.date) -> DataFrame:
    """``rows`` with ``DayBits<w>`` words: as the run's aggregation made them, or from
    ``EventDate`` for daily partials (one bit per row, for the window being rolled up)."""
    if day_bit_columns(rows):
        return rows
    return rows.withColumns(day_bits(F.col("EventDate"), window_start, window_end))


def bit_count(words: list[str]) -> Column:
    """Number of bits set over the words (days of the window seen)."""
    return sum((F.bit_count(w) for w in words), start=F.lit(0)).cast("long")


def summarize(
    matched: DataFrame,
    cfg: PolicyConfig,
    window_start: dt.date,
    window_end: dt.date,
    group: tuple[str, ...] = GROUP,
) -> DataFrame:
    """Policy rows for one window: ``group`` columns, then ``POLICY_COLUMNS`` after the group.

    ``matched``: the connection table after the server-key join
    (``classify.match_server_keys``), with or without ``AliasPath``. Each branch reads one
    facet: the counts per program and device (``DEVICE``), ports and remote IPs
    (``ADDRESS``), names, protocols, tags and URLs (``DESCRIPTOR``); the branches meet in a
    join of small per-program tables.
    """
    rows = with_alias(matched, cfg)
    # Counts: one row per program and device, the days it was seen as bit words.
    devices = with_day_bits(facet(rows, DEVICE), window_start, window_end)
    words = day_bit_columns(devices)
    by_device = devices.groupBy(*group, "DeviceId").agg(
        F.sum("Connections").alias("Connections"),
        F.min("FirstSeen").alias("FirstSeen"),
        F.max("LastSeen").alias("LastSeen"),
        *(F.bit_or(w).alias(w) for w in words),
    )
    machines = F.count(F.lit(1)) if cfg.distinct_machines == "exact" else F.approx_count_distinct("DeviceId")
    main = (
        by_device.groupBy(*group)
        .agg(
            F.sum("Connections").cast("long").alias("ConnectionCount"),
            machines.cast("long").alias("DistinctMachines"),
            F.sum(bit_count(words)).cast("long").alias("DeviceDays"),
            *(F.bit_or(w).alias(f"_all{w}") for w in words),
            F.min("FirstSeen").alias("FirstSeen"),
            F.max("LastSeen").alias("LastSeen"),
        )
        .withColumn("DaysObserved", bit_count([f"_all{w}" for w in words]))
    )

    descriptors = facet(rows, DESCRIPTOR)
    described = descriptors.groupBy(*group).agg(
        F.min(F.when(F.col("FileName") != F.lit(""), F.col("FileName"))).alias("ExampleFileName"),
        F.min(PATH).alias("ExamplePath"),
        F.sort_array(F.collect_set(F.when(F.col("Protocol") != F.lit(""), F.col("Protocol")))).alias(
            "Protocols"
        ),
        F.sort_array(F.array_distinct(F.flatten(F.collect_set("Tags")))).alias("Tags"),
    )
    outbound = descriptors.where(F.col("Directionality") == F.lit(OUTBOUND))
    urls = top_weighted(outbound, group, "RemoteUrl", "Connections", TOP_URLS)
    addresses = facet(rows, ADDRESS)
    ports = capped_distinct(addresses, group, "Port", cfg.set_cap)
    ips = capped_distinct(addresses, group, "RemoteIP", cfg.set_cap)
    keys = list(group)
    return (
        main.join(described, on=keys, how="inner")
        .join(ips, on=keys, how="inner")
        .join(ports, on=keys, how="left")
        .join(urls, on=keys, how="left")
        .withColumn("Ports", F.coalesce(F.col("Ports"), F.array().cast("array<int>")))
        .withColumn("PortCount", F.coalesce(F.col("PortCount"), F.lit(0).cast("long")))
        .withColumn("TopRemoteUrls", F.coalesce(F.col("TopRemoteUrls"), F.array().cast("array<string>")))
        .withColumn("window_start", F.lit(window_start))
        .withColumn("window_end", F.lit(window_end))
        .select(*group, *(c for c in POLICY_COLUMNS if c not in group))
    )
