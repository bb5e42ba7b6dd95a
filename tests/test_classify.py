"""The server-key semi join, the outbound anti join that cannot match, and both join plans."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from fwpolicy.classify import (
    DEVICE,
    INBOUND_DETAIL,
    OUTBOUND,
    SERVER_KEY,
    connections,
    match_server_keys,
    server_keys,
)
from fwpolicy.config import PolicyConfig
from fwpolicy.pipeline import build_policy

from helpers import DAY, NEXT_DAY, event, events_df, policy_dict
from kql_reference import reference_policy

SVCHOST = r"C:\Windows\System32\svchost.exe"
SQL = r"C:\Program Files\Microsoft SQL Server\sqlservr.exe"

ROWS = [
    # d1 listens on 445 and accepts on it: both are inbound rows of a server key.
    event(
        DeviceId="d1",
        ActionType="ListeningConnectionCreated",
        LocalPort=445,
        RemoteIP="",
        InitiatingProcessFolderPath=SVCHOST,
    ),
    event(
        DeviceId="d1",
        ActionType="InboundConnectionAccepted",
        LocalPort=445,
        RemoteIP="10.0.0.9",
        InitiatingProcessFolderPath=SVCHOST,
    ),
    # d1 also reaches out from 445 with ConnectionSuccess: inbound (LocalPort < E) and keyed.
    event(
        DeviceId="d1",
        ActionType="ConnectionSuccess",
        LocalPort=445,
        RemoteIP="10.0.0.8",
        InitiatingProcessFolderPath=SVCHOST,
    ),
    # d2 has the same program on 445 but never listened: no server key, so not inbound.
    event(
        DeviceId="d2",
        ActionType="ConnectionSuccess",
        LocalPort=445,
        RemoteIP="10.0.0.7",
        InitiatingProcessFolderPath=SVCHOST,
    ),
    # d1 accepts on 1433 for another program: a key of its own.
    event(
        DeviceId="d1",
        ActionType="InboundConnectionAccepted",
        LocalPort=1433,
        RemoteIP="10.0.0.6",
        InitiatingProcessFolderPath=SQL,
    ),
    # Outbound rows of the same device and program (LocalPort >= E): never removed by the anti join.
    event(
        DeviceId="d1",
        ActionType="ConnectionSuccess",
        LocalPort=50000,
        RemotePort=445,
        RemoteIP="20.0.0.1",
        InitiatingProcessFolderPath=SVCHOST,
    ),
    event(
        DeviceId="d1",
        ActionType="ConnectionRequest",
        LocalPort=60000,
        RemotePort=1433,
        RemoteIP="20.0.0.2",
        InitiatingProcessFolderPath=SQL,
    ),
]


@pytest.fixture(scope="module")
def conns(spark):
    return connections(events_df(spark, ROWS), PolicyConfig()).cache()


def test_server_keys_are_the_listening_and_accepting_ports(conns):
    keys = {tuple(r[c] for c in SERVER_KEY) for r in server_keys(conns).collect()}
    assert keys == {("Inbound", "d1", SVCHOST, 445), ("Inbound", "d1", SQL, 1433)}


def test_semi_join_keeps_only_keyed_inbound_rows(conns):
    matched = match_server_keys(conns, PolicyConfig()).where(F.col("Directionality") == "Inbound")
    # An inbound event is counted once, in INBOUND_DETAIL, with its server key and remote IP.
    assert {r["Facet"] for r in matched.collect()} == {INBOUND_DETAIL}
    got = sorted((r["DeviceId"], r["Port"], r["RemoteIP"], r["Connections"]) for r in matched.collect())
    # RemoteIP is blanked for inbound rows, so d1's three 445 rows collapse into one connection.
    assert got == [("d1", 445, "", 3), ("d1", 1433, "", 1)]


def test_outbound_anti_join_can_never_match(conns):
    # KQL: outbound | join kind=leftanti ServerConnections on DeviceId, path, LocalPort.
    # Every server key has LocalPort < E, every outbound row LocalPort >= E. Show it on the data:
    # join outbound rows on their *local* port (as KQL does) and find nothing to remove.
    cfg = PolicyConfig()
    keys = server_keys(conns).select(
        "DeviceId", "InitiatingProcessFolderPath", F.col("Port").alias("LocalPort")
    )
    assert keys.where(F.col("LocalPort") >= cfg.ephemeral_start).count() == 0
    outbound = conns.where((F.col("Directionality") == OUTBOUND) & (F.col("Facet") == DEVICE))
    assert outbound.count() == 2
    # An outbound row's LocalPort is >= E by construction of its leg, so no key can equal it.
    assert outbound.where(F.col("Removed").isNotNull()).count() == 0


@pytest.mark.parametrize("strategy", ["broadcast", "shuffle", "auto"])
def test_join_strategies_give_identical_results(spark, spark_conf, strategy):
    # Without AQE, the plan chosen before execution is the one that runs, so it can be inspected.
    spark_conf("spark.sql.adaptive.enabled", "false")
    spark_conf("spark.sql.autoBroadcastJoinThreshold", "-1" if strategy == "auto" else "10485760")
    cfg = PolicyConfig(server_keys_join=strategy)
    df = build_policy(events_df(spark, ROWS), cfg, DAY, NEXT_DAY)
    plan = df._jdf.queryExecution().executedPlan().toString()
    if strategy == "broadcast":
        assert "BroadcastHashJoin" in plan and "LeftOuter" in plan
    else:
        # auto with broadcasting disabled stands for keys too large to broadcast.
        assert "SortMergeJoin [Directionality" in plan
    assert policy_dict(df) == reference_policy(ROWS)
