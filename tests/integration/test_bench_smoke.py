"""The benchmark's peers compute the seed query too: DuckDB's SQL and the naive PySpark port.

A benchmark of wrong answers is worthless, so both are checked here against the pure-Python
oracle (``kql_reference``) on a tiny generated Parquet lake plus rows that hit each KQL trap.
No timings are asserted: ``make bench`` measures, this only checks answers.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import itertools
import sys
from types import ModuleType

import pytest
from pyspark.sql import functions as F

from fwpolicy.tasks.generate import EVENT_SCHEMA, generate_events, write_lake

from helpers import REPO, event, events_df, policy_dict
from kql_reference import kql_indexof, kql_substring, reference_policy

BENCH = REPO / "bench"
START = dt.date(2026, 8, 1)
END = dt.date(2026, 8, 4)  # three generated days
UTC = dt.timezone.utc


def load_bench(name: str) -> ModuleType:
    """A bench/ script as a module (bench/ is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: naive_port registers itself for pickling by value
    spec.loader.exec_module(module)
    return module


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def trap_rows() -> list[dict]:
    """Events that separate a faithful port from a plausible one (see DESIGN.md)."""
    ts = at(START)
    server = {"DeviceId": "dev-srv", "InitiatingProcessFolderPath": r"C:\Srv\srv.exe", "LocalPort": 8443}
    rows = [
        # alias quirks and case-insensitive matching
        event(Timestamp=ts, InitiatingProcessFolderPath=r"C:\Users\bob"),
        event(Timestamp=ts, InitiatingProcessFolderPath=r"C:\Users\a\AppData\x.exe"),
        event(Timestamp=ts, InitiatingProcessFolderPath=r"\\?\C:\Windows\x.exe"),
        event(Timestamp=ts, InitiatingProcessFolderPath=r"D:\Users\bob\x.exe"),
        event(Timestamp=ts, InitiatingProcessFolderPath=r"c:\Documents and Settings\Zoë\app\x.exe"),
        event(Timestamp=ts, InitiatingProcessFolderPath=r"C:\PROGRAM FILES\Big\Y.exe"),
        event(Timestamp=ts, InitiatingProcessFolderPath=None),
        # filters: nulls read as '', case-sensitive == and in, case-insensitive startswith
        event(Timestamp=ts, RemoteIP=None),
        event(Timestamp=ts, RemoteIP="169.254.3.3"),
        event(Timestamp=ts, RemoteIPType="Loopback", DeviceId="dev-loop"),
        event(Timestamp=ts, RemoteIPType="loopback", DeviceId="dev-loop-lower"),
        event(Timestamp=ts, RemoteIPType=None, DeviceId="dev-null-type"),
        event(Timestamp=ts, LocalIP="20.1.1.1", DeviceId="dev-self"),
        event(Timestamp=ts, ActionType="connectionsuccess", DeviceId="dev-lower-action"),
        event(Timestamp=ts, LocalPort=None, DeviceId="dev-null-port"),
        # inbound: a server key, a connection on it, and one on a port nobody listens on
        event(
            Timestamp=ts, ActionType="ListeningConnectionCreated", LocalIP="0.0.0.0", RemoteIP="", **server
        ),
        event(Timestamp=ts, ActionType="ConnectionSuccess", RemoteIP="10.9.9.9", RemotePort=50001, **server),
        event(Timestamp=ts, ActionType="ConnectionSuccess", LocalPort=8000, DeviceId="dev-srv"),
        # the window: [START, END) on Timestamp, whatever the partition says
        event(Timestamp=dt.datetime.combine(END, dt.time(), tzinfo=UTC), DeviceId="dev-at-end"),
        event(Timestamp=at(START) - dt.timedelta(hours=12, microseconds=1), DeviceId="dev-before"),
    ]
    # more than 128 distinct ports and remote IPs in one group: the capped sets
    rows += [
        event(
            Timestamp=ts,
            InitiatingProcessFolderPath=r"C:\Tools\many.exe",
            RemotePort=1000 + i,
            RemoteIP=f"20.0.{i}.1",
        )
        for i in range(140)
    ]
    return rows


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> str:
    """A generated fleet (40 devices x 3 days) plus the trap rows, as a Hive-partitioned lake."""
    generated = generate_events(spark, 40, 3, seed=7, start=START, events_per_device_day=15)
    traps = events_df(spark, trap_rows())
    traps = traps.select(
        *[
            F.col(f.name) if f.name in traps.columns else F.lit(None).cast(f.dataType).alias(f.name)
            for f in EVENT_SCHEMA.fields
            if f.name != "EventDate"
        ],
        F.to_date("Timestamp").alias("EventDate"),
    )
    path = str(tmp_path_factory.mktemp("bench") / "lake")
    write_lake(generated.unionByName(traps), path, "parquet")
    return path


@pytest.fixture(scope="module")
def expected(spark, lake) -> dict:
    window = (F.col("Timestamp") >= F.lit(at(START, 0))) & (F.col("Timestamp") < F.lit(at(END, 0)))
    rows = [r.asDict() for r in spark.read.parquet(lake).where(window).collect()]  # ~2k rows
    policy = reference_policy(rows)
    # The lake must exercise what it is meant to: both legs, the quirks, the caps.
    assert {d for d, _ in policy} == {"Inbound", "Outbound"}
    assert ("Outbound", "%userprofile%b") in policy
    assert ("Inbound", r"c:\srv\srv.exe") in policy
    assert policy[("Outbound", r"c:\tools\many.exe")]["PortCount"] == 140
    return policy


def test_duckdb_translation_matches_reference(lake, expected):
    duckdb_query = load_bench("duckdb_query")
    con = duckdb_query.connect(threads=1)
    rows = duckdb_query.policy_rows(con, lake, START, END)
    got = {
        (r["Directionality"], r["AliasPath"]): {c: r[c] for c in duckdb_query.POLICY_COLUMNS[2:]}
        for r in rows
    }
    assert got == expected


def test_naive_port_matches_reference(spark, lake, expected):
    naive_port = load_bench("naive_port")
    assert policy_dict(naive_port.naive_policy(spark, lake, START, END)) == expected


TEXTS = ["", "ab", r"C:\Users\bob", r"C:\Users\bob\x.exe", "żółw🐢x\\y"]


def test_duckdb_kql_string_macros_follow_kql_rules():
    duckdb_query = load_bench("duckdb_query")
    con = duckdb_query.connect(threads=1)
    sub_cases = list(itertools.product(TEXTS, range(-12, 14), [-1, 0, 2, 99]))
    got = con.execute(
        "SELECT kql_substring(s, st, ln) FROM (SELECT unnest($1) AS s, unnest($2) AS st, unnest($3) AS ln)",
        [[c[0] for c in sub_cases], [c[1] for c in sub_cases], [c[2] for c in sub_cases]],
    ).fetchall()
    assert [g[0] for g in got] == [kql_substring(*c) for c in sub_cases]
    idx_cases = list(itertools.product(TEXTS, ["\\", "b", "🐢"], range(-12, 14)))
    got = con.execute(
        "SELECT kql_indexof(s, x, st) FROM (SELECT unnest($1) AS s, unnest($2) AS x, unnest($3) AS st)",
        [[c[0] for c in idx_cases], [c[1] for c in idx_cases], [c[2] for c in idx_cases]],
    ).fetchall()
    assert [g[0] for g in got] == [kql_indexof(*c) for c in idx_cases]


def test_default_lake_is_20m_events_of_5000_devices_over_90_days():
    run = load_bench("run")
    spec = run.LakeSpec.for_target(20e6)
    assert (spec.devices, spec.days) == (5000, 90)
    assert abs(spec.devices * spec.days * spec.events_per_device_day - 20e6) / 20e6 < 0.02
