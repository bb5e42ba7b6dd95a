"""A run's small reduced table is worked on as one partition: no exchange, same tables.

``seed.from_connections`` keeps a reduced table of at most ``ONE_PARTITION_ROWS`` rows on one
partition (``seed.kept_locally``), where every grouping and window is already clustered.
These tests check that the groupings after it then plan no exchange, and that the tables are
the same either way and equal the pure-Python reference of the seed query.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pyspark.sql import DataFrame

from fwpolicy.config import PolicyConfig
from fwpolicy.query import seed
from fwpolicy.review.hunting import unusual_programs

from helpers import event, events_df, policy_dict
from kql_reference import reference_policy

START, END = dt.date(2026, 8, 1), dt.date(2026, 8, 4)
PATHS = [
    r"C:\Windows\System32\svchost.exe",
    r"c:\WINDOWS\system32\svchost.exe",
    r"C:\Users\bob\AppData\Local\Temp\x.exe",
    r"C:\Program Files\App\app.exe",
    r"C:\ProgramData\tool.exe",
    "/usr/sbin/sshd",
    "/tmp/.x/agent",
]
ACTIONS = ["ListeningConnectionCreated", "InboundConnectionAccepted", "ConnectionSuccess", "ConnectionFailed"]
IPS = ["10.0.0.1", "20.0.0.1", "52.1.2.3", "169.254.1.1", "127.0.0.1", ""]
PORTS = [22, 80, 443, 445, 3389, 8081, 40000, 49152, 50001, 61000]


def fleet(n: int = 400, seed_value: int = 11) -> list[dict]:
    """``n`` events over three days and four devices, drawn from pools that meet every leg."""
    rnd = random.Random(seed_value)
    return [
        event(
            Timestamp=dt.datetime(2026, 8, 1 + rnd.randrange(3), rnd.randrange(24), rnd.randrange(60)),
            DeviceId=rnd.choice(["d1", "d2", "d3", "d4"]),
            ActionType=rnd.choice(ACTIONS),
            LocalPort=rnd.choice(PORTS),
            RemotePort=rnd.choice(PORTS),
            RemoteIP=rnd.choice(IPS),
            InitiatingProcessFolderPath=rnd.choice(PATHS),
        )
        for _ in range(n)
    ]


def has_exchange(df: DataFrame) -> bool:
    """Whether the physical plan Spark chose for ``df`` moves rows between partitions."""
    return "Exchange" in df._jdf.queryExecution().executedPlan().toString()


def rows_of(df: DataFrame) -> list[tuple]:
    return sorted(tuple(r) for r in df.collect())


@pytest.fixture(scope="module")
def events(spark):
    return events_df(spark, fleet())


def test_kept_steps_are_one_partition_and_group_without_exchanges(events):
    query = seed.seed_query(events, PolicyConfig(), (START, END), keep=seed.materialized)
    for step in (query.conns, query.rows, query.devices, query.summary):
        assert step.rdd.getNumPartitions() == 1
    # Groupings and windows over the kept rows are clustered already: no rows move.
    addresses = seed.facet(query.rows, seed.ADDRESS)
    assert not has_exchange(seed.by_device(query.rows))
    assert not has_exchange(seed.capped_distinct(addresses, seed.SUMMARY_GROUP, "RemoteIP", 128))
    # A lazily built query (the tests' and the large tables' way) exchanges for the same steps.
    lazily = seed.seed_query(events, PolicyConfig(), (START, END))
    assert has_exchange(seed.by_device(lazily.rows))


@pytest.mark.slow  # the query twice; the bench compares the engines at 20M on Spark's partitions
def test_one_partition_and_spread_partitions_give_the_same_tables(events, monkeypatch):
    cfg = PolicyConfig()
    local = seed.seed_query(events, cfg, (START, END), keep=seed.materialized)
    monkeypatch.setattr(seed, "ONE_PARTITION_ROWS", 0)  # every reduced table counts as large
    spread = seed.seed_query(events, cfg, (START, END), keep=seed.materialized)
    assert has_exchange(seed.by_device(spread.rows))  # Spark's own partitioning, not one partition
    assert rows_of(local.summary) == rows_of(spread.summary)
    assert rows_of(unusual_programs(local)) == rows_of(unusual_programs(spread))
    assert policy_dict(local.policy()) == reference_policy(fleet())
