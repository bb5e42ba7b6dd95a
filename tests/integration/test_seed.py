"""The server-key semi join, the outbound anti join that cannot match, both join plans, and the
reduction of a run without rules."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from pyspark.sql import functions as F

from fwpolicy.config import PolicyConfig
from fwpolicy.query import seed
from fwpolicy.query.seed import (
    DEVICE,
    INBOUND_DETAIL,
    OUTBOUND,
    PATH,
    SERVER_KEY,
    connection_table,
    direction,
    firewall_policy,
    matched_rows,
    normalize_nulls,
    removal_reason,
    served_only,
    server_keys,
    where_clauses,
)

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
    return connection_table(where_clauses(events_df(spark, ROWS), PolicyConfig())).cache()


def test_server_keys_are_the_listening_and_accepting_ports(conns):
    keys = {tuple(r[c] for c in SERVER_KEY) for r in server_keys(conns).collect()}
    assert keys == {("Inbound", "d1", SVCHOST, 445), ("Inbound", "d1", SQL, 1433)}


def test_semi_join_keeps_only_keyed_inbound_rows(conns):
    matched = matched_rows(conns, PolicyConfig()).where(F.col("Directionality") == "Inbound")
    # An inbound event is counted once, in INBOUND_DETAIL, with its server key and remote IP.
    assert {r["Facet"] for r in matched.collect()} == {INBOUND_DETAIL}
    got = sorted((r["DeviceId"], r["Port"], r["RemoteIP"], r["Connections"]) for r in matched.collect())
    # RemoteIP is blanked for inbound rows, so d1's three 445 rows collapse into one connection.
    assert got == [("d1", 445, "", 3), ("d1", 1433, "", 1)]


def test_early_semi_join_keeps_what_the_join_after_merging_keeps(spark):
    # The nightly drops unserved inbound rows from its blocks before they merge. d2's 445 is
    # keyed by a listen three days after its connection; d3's 40000 is never keyed.
    later = dt.datetime(2026, 8, 4, 12)
    rows = [
        *ROWS,
        event(
            DeviceId="d2",
            ActionType="ListeningConnectionCreated",
            LocalPort=445,
            Timestamp=later,
            RemoteIP="",
            InitiatingProcessFolderPath=SVCHOST,
        ),
        event(
            DeviceId="d3",
            ActionType="ConnectionSuccess",
            LocalPort=40000,
            RemoteIP="10.0.0.4",
            InitiatingProcessFolderPath=SVCHOST,
        ),
    ]
    cfg = PolicyConfig()
    daily = connection_table(where_clauses(events_df(spark, rows), cfg))  # a row per day and key
    inbound = F.col("Facet") == INBOUND_DETAIL
    kept = served_only(daily, cfg)
    # The d2 row of 2026-08-01 is kept by the key of 2026-08-04; the d3 row goes.
    assert {(r["DeviceId"], r["Port"]) for r in kept.where(inbound).collect()} == {
        ("d1", 445),
        ("d1", 1433),
        ("d2", 445),
    }
    assert daily.where(inbound & (F.col("DeviceId") == "d3")).count() == 1
    assert kept.where(~inbound).exceptAll(daily.where(~inbound).select(*kept.columns)).count() == 0
    assert kept.where(~inbound).count() == daily.where(~inbound).count()
    early = matched_rows(kept, cfg).drop("EventDate")
    late = matched_rows(daily, cfg).drop("EventDate").select(*early.columns)
    assert early.exceptAll(late).count() == 0 and late.exceptAll(early).count() == 0


def test_a_run_without_rules_reduces_as_rules_that_match_nothing(spark):
    # Without rules, Excluded and Tags stay out of the grouping and are added after it; rules
    # that match no event group by them. Both tables must hold the same rows, facet by facet.
    loopback = event(DeviceId="d1", ActionType="ConnectionSuccess", RemoteIPType="Loopback", LocalPort=50001)
    events = events_df(spark, [*ROWS, loopback])
    cfg = PolicyConfig()
    window = (DAY, NEXT_DAY)
    plain = connection_table(where_clauses(events, cfg), window)
    assert plain.where(F.col("Removed") == "loopback").count() == 1
    ruled = connection_table(
        where_clauses(events, cfg, F.lit(None).cast("string"), F.array().cast("array<string>")), window
    )
    assert plain.columns == ruled.columns
    assert plain.exceptAll(ruled).count() == 0 and ruled.exceptAll(plain).count() == 0
    assert {r["Facet"] for r in plain.where(F.col("Tags").isNull()).collect()} == {DEVICE}


def outbound_events(spark, cfg):
    """The outbound leg as the seed query reads it: events, each with its own ``LocalPort``
    (the reduced table folds ports: an outbound row's ``Port`` is its ``RemotePort``)."""
    events = normalize_nulls(events_df(spark, ROWS)).withColumn("Rejected", F.lit(None).cast("string"))
    fates = events.withColumn("Directionality", direction(cfg)).withColumn("Removed", removal_reason())
    return fates.where((F.col("Directionality") == OUTBOUND) & F.col("Removed").isNull())


def test_outbound_anti_join_can_never_match(spark, conns):
    # KQL: outbound | join kind=leftanti ServerConnections on DeviceId, path, LocalPort.
    # The code does not perform it (seed.outbound_leg): every server key has LocalPort < E and
    # every outbound row LocalPort >= E. Perform it here, on events of the same devices and
    # programs that both listen and connect out, so that a wrong claim would show.
    cfg = PolicyConfig()
    keys = server_keys(conns).select("DeviceId", PATH, F.col("Port").alias("LocalPort"))
    assert keys.where(F.col("LocalPort") >= cfg.ephemeral_start).count() == 0
    outbound = outbound_events(spark, cfg)
    assert outbound.count() == 2
    # The data can trip a wrong join: on (DeviceId, path) alone every outbound event meets a
    # key of its own program and device, and on the folded port (RemotePort 445 and 1433,
    # the ports those programs listen on) the anti join would remove both.
    assert outbound.join(keys.drop("LocalPort"), on=["DeviceId", PATH], how="inner").count() == 2
    folded = outbound.withColumn("LocalPort", F.col("RemotePort"))
    assert folded.join(keys, on=["DeviceId", PATH, "LocalPort"], how="left_anti").count() == 0
    # The seed's own join, on each event's LocalPort before the ports are folded, removes nothing.
    kept = outbound.join(keys, on=["DeviceId", PATH, "LocalPort"], how="left_anti")
    assert kept.count() == outbound.count()
    # And the code keeps exactly those events in its outbound leg (DEVICE rows count each once).
    legs = matched_rows(conns, cfg).where((F.col("Directionality") == OUTBOUND) & (F.col("Facet") == DEVICE))
    assert legs.agg(F.sum("Connections")).first()[0] == kept.count()


@pytest.mark.parametrize("strategy", ["broadcast", "shuffle", pytest.param("auto", marks=pytest.mark.slow)])
def test_join_strategies_give_identical_results(spark, spark_conf, strategy):
    # Without AQE, the plan chosen before execution is the one that runs, so it can be inspected.
    spark_conf("spark.sql.adaptive.enabled", "false")
    spark_conf("spark.sql.autoBroadcastJoinThreshold", "-1" if strategy == "auto" else "10485760")
    cfg = PolicyConfig(server_keys_join=strategy)
    df = firewall_policy(events_df(spark, ROWS), cfg, DAY, NEXT_DAY)
    plan = df._jdf.queryExecution().executedPlan().toString()
    # The server-key join is the one on SERVER_KEY; the plan has other joins (the alias table
    # is always broadcast, the summary's branches meet in left joins), so match it by its keys.
    key = r"\[Directionality#\d+, DeviceId#\d+, InitiatingProcessFolderPath#\d+, Port#\d+\]"
    broadcast = re.compile(rf"BroadcastHashJoin {key}, {key}, LeftOuter")
    merge = re.compile(rf"SortMergeJoin {key}, {key}, LeftOuter")
    if strategy == "broadcast":
        assert broadcast.search(plan) and not merge.search(plan)
    else:
        # auto with broadcasting disabled stands for keys too large to broadcast.
        assert merge.search(plan) and not broadcast.search(plan)
    assert policy_dict(df) == reference_policy(ROWS)


@pytest.mark.parametrize(("counted", "plan_of"), [(3, "BroadcastHashJoin"), (None, "SortMergeJoin")])
def test_auto_joins_counted_keys_by_broadcast(spark, spark_conf, monkeypatch, counted, plan_of):
    # A kept run counts its server keys, and auto then broadcasts them up to BROADCAST_KEYS
    # even where the planner would not (broadcasting disabled here); uncounted, it plans as
    # Spark chooses. Past the limit the same count asks for a sort-merge join.
    spark_conf("spark.sql.adaptive.enabled", "false")
    spark_conf("spark.sql.autoBroadcastJoinThreshold", "-1")
    cfg = PolicyConfig(server_keys_join="auto")
    conns = connection_table(where_clauses(events_df(spark, ROWS), cfg))
    key = r"\[Directionality#\d+, DeviceId#\d+, InitiatingProcessFolderPath#\d+, Port#\d+\]"
    chosen = re.compile(rf"{plan_of} {key}, {key}, LeftOuter")
    assert chosen.search(matched_rows(conns, cfg, counted)._jdf.queryExecution().executedPlan().toString())
    if counted is not None:
        monkeypatch.setattr(seed, "BROADCAST_KEYS", counted - 1)
        plan = matched_rows(conns, cfg, counted)._jdf.queryExecution().executedPlan().toString()
        assert re.search(rf"SortMergeJoin {key}, {key}, LeftOuter", plan)
