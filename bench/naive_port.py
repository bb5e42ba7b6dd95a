"""A naive, literal PySpark port of the seed KQL query: the benchmark's slow baseline.

This is what a first port of the query tends to look like, and what fwpolicy's plan is measured
against. It is deliberately not part of ``lib/`` and breaks the house rules on purpose:

* the source is read three times, once per ``DeviceNetworkEvents`` reference in the KQL (server
  keys, inbound leg, outbound leg);
* the outbound leg performs its ``leftanti`` join for real (fwpolicy proves it removes nothing);
* ``AliasPath`` is a row-at-a-time Python UDF, so every event is serialised to a Python worker.

It keeps the KQL semantics (null strings as ``''``, case-insensitive ``startswith``/``contains``,
0-based clamping ``substring``/``indexof``, sorted capped sets with full counts), so it produces
the same rows as fwpolicy and DuckDB; the benchmark checks that.

Command line (a fresh process, with fwpolicy's session settings):

    python bench/naive_port.py --source LAKE --start 2026-08-01 --end 2026-10-30 --output OUT
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence

from pyspark import cloudpickle
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

# Imported by a test as a plain module: ship this module's functions to Python workers by value.
if __name__ != "__main__":
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

SERVER_ACTIONS = ["InboundConnectionAccepted", "ListeningConnectionCreated"]
OUTBOUND_ACTIONS = ["ConnectionSuccess", "ConnectionFound", "ConnectionRequest"]
STRING_COLUMNS = [
    "DeviceId",
    "ActionType",
    "LocalIP",
    "RemoteIP",
    "RemoteIPType",
    "InitiatingProcessFolderPath",
]
KEY = ["DeviceId", "InitiatingProcessFolderPath", "LocalPort"]


def substring(s: str, start: int, length: int | None = None) -> str:
    """KQL ``substring``: 0-based, negative start from the end, start and length clamped."""
    if start < 0:
        start = max(len(s) + start, 0)
    if length is None:
        return s[start:]
    return s[start : start + max(length, 0)]


def indexof(s: str, lookup: str, start: int = 0) -> int:
    """KQL ``indexof``: 0-based, -1 when absent (also for a start past the end)."""
    if start < 0:
        start = max(len(s) + start, 0)
    return -1 if start > len(s) else s.find(lookup, start)


def alias_path(folder_path: str) -> str:
    """The KQL ``AliasPath`` function, line by line (quirks included)."""
    p, low = folder_path, folder_path.lower()
    if low.startswith("c:\\users\\"):
        out = "%UserProfile%" + substring(p, indexof(p, "\\", 11), len(p) - 11)
    elif low.startswith("c:\\documents and settings\\"):
        out = "%UserProfile%" + substring(p, indexof(p, "\\", 27), len(p) - 27)
    elif ":\\windows\\" in low:
        out = "%windir%" + substring(p, 10)
    elif ":\\programdata\\" in low:
        out = "%programdata%" + substring(p, 14)
    elif ":\\program files\\" in low:
        out = "%ProgramFiles%" + substring(p, 16)
    elif ":\\program files (x86)\\" in low:
        out = "%ProgramFilesx86%" + substring(p, 22)
    else:
        out = p
    return out.lower()


alias_udf = F.udf(alias_path, T.StringType())


def device_network_events(spark: SparkSession, source: str, start: dt.date, end: dt.date) -> DataFrame:
    """One fresh read of the window (as each KQL ``DeviceNetworkEvents`` reference is)."""
    lo = dt.datetime.combine(start, dt.time(), tzinfo=dt.timezone.utc)
    hi = dt.datetime.combine(end, dt.time(), tzinfo=dt.timezone.utc)
    df = spark.read.parquet(source)
    if "EventDate" in df.columns:
        one_day = dt.timedelta(days=1)
        df = df.where(F.col("EventDate").between(start - one_day, end + one_day))
    df = df.where((F.col("Timestamp") >= F.lit(lo)) & (F.col("Timestamp") < F.lit(hi)))
    return df.withColumns({c: F.coalesce(F.col(c), F.lit("")) for c in STRING_COLUMNS})


def kql_where(df: DataFrame, actions: list[str], inbound: bool, ephemeral_start: int) -> DataFrame:
    port = F.col("LocalPort") < ephemeral_start if inbound else F.col("LocalPort") >= ephemeral_start
    return df.where(
        F.col("ActionType").isin(actions)
        & (F.col("RemoteIPType") != "Loopback")
        & (F.col("LocalIP") != F.col("RemoteIP"))
        & ~F.lower(F.col("RemoteIP")).startswith("169.254")
        & port
    )


def naive_policy(
    spark: SparkSession,
    source: str,
    start: dt.date,
    end: dt.date,
    ephemeral_start: int = 49152,
    cap: int = 128,
) -> DataFrame:
    """The policy rows of ``[start, end)``: three reads, semi and anti joins, a Python UDF."""
    server = (
        kql_where(device_network_events(spark, source, start, end), SERVER_ACTIONS, True, ephemeral_start)
        .select(*KEY)
        .distinct()
    )
    inbound = (
        kql_where(
            device_network_events(spark, source, start, end),
            SERVER_ACTIONS + OUTBOUND_ACTIONS,
            True,
            ephemeral_start,
        )
        .join(server, KEY, "left_semi")
        .select(
            F.lit("Inbound").alias("Directionality"),
            alias_udf("InitiatingProcessFolderPath").alias("AliasPath"),
            "DeviceId",
            F.col("LocalPort").alias("Port"),
            F.lit("").alias("RemoteIP"),
        )
    )
    outbound = (
        kql_where(device_network_events(spark, source, start, end), OUTBOUND_ACTIONS, False, ephemeral_start)
        .join(server, KEY, "left_anti")
        .select(
            F.lit("Outbound").alias("Directionality"),
            alias_udf("InitiatingProcessFolderPath").alias("AliasPath"),
            "DeviceId",
            F.col("RemotePort").alias("Port"),
            "RemoteIP",
        )
    )
    summary = (
        inbound.unionByName(outbound)
        .groupBy("Directionality", "AliasPath")
        .agg(
            F.count(F.lit(1)).alias("ConnectionCount"),
            F.countDistinct("DeviceId").alias("DistinctMachines"),
            F.collect_set("Port").alias("_ports"),
            F.collect_set("RemoteIP").alias("_ips"),
        )
    )
    return summary.select(
        "Directionality",
        "AliasPath",
        "ConnectionCount",
        "DistinctMachines",
        F.slice(F.sort_array("_ports"), 1, cap).alias("Ports"),
        F.slice(F.sort_array("_ips"), 1, cap).alias("RemoteIPs"),
        F.size("_ports").cast("long").alias("PortCount"),
        F.size("_ips").cast("long").alias("RemoteIPCount"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from fwpolicy.io.session import get_spark

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", required=True, help="Parquet lake of DeviceNetworkEvents")
    p.add_argument("--start", required=True, type=dt.date.fromisoformat)
    p.add_argument("--end", required=True, type=dt.date.fromisoformat)
    p.add_argument("--output", required=True, help="Parquet folder for the result")
    args = p.parse_args(argv)
    began = time.monotonic()
    spark = get_spark("fwpolicy-naive-port")  # same session settings as fwpolicy's own runs
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    naive_policy(spark, args.source, args.start, args.end).write.mode("overwrite").parquet(args.output)
    rows = spark.read.parquet(args.output).count()
    print(f"naive port: {rows} rows in {time.monotonic() - began:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
