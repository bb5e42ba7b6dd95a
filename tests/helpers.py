"""Small builders shared by tests: explicit schemas, rows in, rows out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

# tests/ (fixtures/, golden/) and the repository root (conf/, bench/, jobs/, README.md), for test
# files in any tier directory below tests/.
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# The shipped benign-traffic rules, and the event columns their matches may name.
SHIPPED_EXCLUSIONS = REPO / "conf" / "exclusions.yaml"
RULE_COLUMNS = frozenset(
    {"InitiatingProcessFileName", "InitiatingProcessCommandLine", "RemoteUrl", "RemoteIP"}
)
# The export golden files, the window of the snapshot they render, the options they are rendered
# with, and the path with quote characters that one of their rules carries (integration and unit
# export tests both check them).
EXPORT_GOLDEN = TESTS / "golden" / "export"
EXPORT_WINDOW = (dt.date(2026, 8, 1), dt.date(2026, 8, 8))
EXPORT_GOLDEN_OPTIONS = {"min_machines": 2, "min_days": 2, "include_remote_addresses": True}
QUOTED_ALIAS = "%programfiles%\\o'neil & sons\\$env:app\\`run tool.exe"

EVENT_FIELDS = (
    ("Timestamp", T.TimestampType()),
    ("DeviceId", T.StringType()),
    ("ActionType", T.StringType()),
    ("LocalIP", T.StringType()),
    ("LocalPort", T.IntegerType()),
    ("RemoteIP", T.StringType()),
    ("RemotePort", T.IntegerType()),
    ("RemoteIPType", T.StringType()),
    ("InitiatingProcessFolderPath", T.StringType()),
    ("InitiatingProcessFileName", T.StringType()),
)
EVENT_SCHEMA = T.StructType([T.StructField(n, t) for n, t in EVENT_FIELDS])
DAY = dt.date(2026, 8, 1)
NEXT_DAY = dt.date(2026, 8, 2)
NOON = dt.datetime(2026, 8, 1, 12, 0, 0)


def event(**kw: Any) -> dict[str, Any]:
    """An event that passes every filter of the outbound leg unless told otherwise."""
    base: dict[str, Any] = {
        "Timestamp": NOON,
        "DeviceId": "dev-1",
        "ActionType": "ConnectionSuccess",
        "LocalIP": "10.0.0.5",
        "LocalPort": 50000,
        "RemoteIP": "20.1.1.1",
        "RemotePort": 443,
        "RemoteIPType": "Public",
        "InitiatingProcessFolderPath": r"C:\Program Files\App\app.exe",
        "InitiatingProcessFileName": "app.exe",
    }
    base.update(kw)
    return base


def server(path: str, port: int, remote_ip: str, **accept: Any) -> list[dict[str, Any]]:
    """A program that listens on ``port`` and accepts one connection from ``remote_ip``
    (``accept``: more columns of the accept event): the two events of a server key."""
    listen = event(ActionType="ListeningConnectionCreated", LocalPort=port, RemoteIP="")
    accepted = event(ActionType="InboundConnectionAccepted", LocalPort=port, RemoteIP=remote_ip, **accept)
    return [{**e, "InitiatingProcessFolderPath": path} for e in (listen, accepted)]


def events_df(spark: SparkSession, rows: list[dict[str, Any]]) -> DataFrame:
    names = [n for n, _ in EVENT_FIELDS]
    return spark.createDataFrame([tuple(r.get(n) for n in names) for r in rows], EVENT_SCHEMA)


def policy_dict(df: DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """firewall_policy rows keyed as kql_reference.reference_policy keys its result."""
    out = {}
    for r in df.collect():
        out[(r["Directionality"], r["AliasPath"])] = {
            "ConnectionCount": r["ConnectionCount"],
            "DistinctMachines": r["DistinctMachines"],
            "Ports": list(r["Ports"]),
            "RemoteIPs": list(r["RemoteIPs"]),
            "PortCount": r["PortCount"],
            "RemoteIPCount": r["RemoteIPCount"],
        }
    return out
