"""Each KQL semantic trap on its own, against the Column helpers and the whole query."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import PolicyConfig
from fwpolicy.kql import kql_contains, kql_indexof, kql_startswith, kql_string, kql_substring
from fwpolicy.pipeline import build_policy
from helpers import DAY, NEXT_DAY, event, events_df, policy_dict
from kql_reference import kql_indexof as ref_indexof
from kql_reference import kql_substring as ref_substring

SUBSTRING_CASES = [
    # (text, start, length, expected by KQL's documented rules)
    ("123456", 1, None, "23456"),
    ("123456", 2, 2, "34"),
    ("ABCD", 0, 2, "AB"),
    ("123456", -2, 2, "56"),  # negative start counts from the end
    ("123456", -1, 5, "6"),  # ... and the length clamps to what is left
    ("123456", -10, 2, "12"),  # a start before the beginning clamps to 0
    ("123456", 6, 1, ""),  # start at the end
    ("123456", 99, None, ""),  # start past the end
    ("123456", 1, -3, ""),  # negative length counts as 0
    ("123456", 4, 99, "56"),  # length clamps
    ("", 0, 1, ""),
    ("żółw🐢x", 3, 2, "w🐢"),  # code points, not bytes or UTF-16 units
]


@pytest.mark.parametrize(("text", "start", "length", "expected"), SUBSTRING_CASES)
def test_substring_matches_kql_rules(spark, text, start, length, expected):
    df = spark.createDataFrame([(text,)], "s string")
    got = df.select(kql_substring("s", start, length).alias("r")).first()["r"]
    assert got == expected
    assert ref_substring(text, start, length) == expected


def test_substring_with_column_arguments(spark):
    df = spark.createDataFrame([("abcdef", -1, 3), ("abcdef", 2, 2)], "s string, st int, ln int")
    got = [r["r"] for r in df.select(kql_substring("s", F.col("st"), F.col("ln")).alias("r")).collect()]
    assert got == ["f", "cd"]


INDEXOF_CASES = [
    ("abcdefg", "cde", 0, 2),
    ("abcdefg", "cde", -5, 2),  # negative start offsets from the end
    ("Hello, world, hello!", "lo", 5, 17),
    ("abc", "x", 0, -1),  # not found is -1
    (r"C:\Users\bob", "\\", 11, -1),
    (r"C:\Users\bob\x.exe", "\\", 11, 12),
    ("abc", "c", 7, -1),  # start past the end finds nothing
]


@pytest.mark.parametrize(("text", "lookup", "start", "expected"), INDEXOF_CASES)
def test_indexof_is_zero_based_and_minus_one_when_absent(spark, text, lookup, start, expected):
    df = spark.createDataFrame([(text,)], "s string")
    assert df.select(kql_indexof("s", lookup, start).alias("r")).first()["r"] == expected
    assert ref_indexof(text, lookup, start) == expected


def test_missing_strings_read_as_empty(spark):
    df = spark.createDataFrame([(None,), ("x",)], "s string")
    assert [r["r"] for r in df.select(kql_string("s").alias("r")).collect()] == ["", "x"]


def test_startswith_and_contains_ignore_case(spark):
    df = spark.createDataFrame([(r"C:\USERS\Bob\x.exe",), (r"d:\WINDOWS\system32\x.exe",)], "s string")
    rows = df.select(
        kql_startswith("s", "c:\\users\\").alias("sw"), kql_contains("s", ":\\Windows\\").alias("ct")
    ).collect()
    assert [(r["sw"], r["ct"]) for r in rows] == [(True, False), (False, True)]


def _policy(spark, rows, **cfg):
    return policy_dict(build_policy(events_df(spark, rows), PolicyConfig(**cfg), DAY, NEXT_DAY))


def test_null_remote_ip_type_is_not_loopback(spark):
    # In Spark, null != 'Loopback' is null and drops the row; in KQL '' != 'Loopback' keeps it.
    got = _policy(spark, [event(RemoteIPType=None)])
    assert got[("Outbound", r"%programfiles%\app\app.exe")]["ConnectionCount"] == 1


def test_both_ips_missing_count_as_equal(spark):
    # KQL: '' != '' is false, so a row with neither IP is removed by LocalIP != RemoteIP.
    assert _policy(spark, [event(LocalIP=None, RemoteIP=None)]) == {}
    # One missing IP is '' against a real address: kept, and '' is a RemoteIP value.
    got = _policy(spark, [event(RemoteIP=None)])
    assert got[("Outbound", r"%programfiles%\app\app.exe")]["RemoteIPs"] == [""]


def test_loopback_and_action_types_are_case_sensitive(spark):
    rows = [
        event(RemoteIPType="loopback"),  # not 'Loopback': kept
        event(RemoteIPType="Loopback"),  # dropped
        event(ActionType="connectionsuccess"),  # `in` is case-sensitive: dropped
    ]
    got = _policy(spark, rows)
    assert got[("Outbound", r"%programfiles%\app\app.exe")]["ConnectionCount"] == 1


def test_link_local_prefix_is_dropped(spark):
    rows = [event(RemoteIP="169.254.3.4"), event(RemoteIP="169.25.1.1")]
    got = _policy(spark, rows)
    assert got[("Outbound", r"%programfiles%\app\app.exe")]["RemoteIPs"] == ["169.25.1.1"]


def test_null_ports_pass_no_where_clause(spark):
    rows = [event(LocalPort=None), event(RemotePort=None)]
    got = _policy(spark, rows)[("Outbound", r"%programfiles%\app\app.exe")]
    # The null LocalPort row is in neither leg; the null RemotePort row counts but has no port.
    assert (got["ConnectionCount"], got["Ports"], got["PortCount"]) == (1, [], 0)


def test_join_keys_are_case_sensitive(spark):
    listen = dict(ActionType="ListeningConnectionCreated", LocalPort=445, RemoteIP="", RemotePort=0)
    rows = [
        event(**listen, InitiatingProcessFolderPath=r"C:\Windows\System32\svchost.exe"),
        # Same device and port, path differing only in case: not the server key in KQL.
        event(
            ActionType="ConnectionSuccess",
            LocalPort=445,
            RemoteIP="10.1.1.1",
            InitiatingProcessFolderPath=r"C:\WINDOWS\System32\svchost.exe",
        ),
    ]
    got = _policy(spark, rows)
    assert got == {
        ("Inbound", r"%windir%\system32\svchost.exe"): {
            "ConnectionCount": 1,
            "DistinctMachines": 1,
            "Ports": [445],
            "RemoteIPs": [""],
            "PortCount": 1,
            "RemoteIPCount": 1,
        }
    }


def test_makeset_caps_at_128_keeping_the_smallest(spark):
    rows = [event(RemotePort=1000 + i, RemoteIP=f"20.0.{i // 250}.{i % 250}") for i in range(300)]
    got = _policy(spark, rows)[("Outbound", r"%programfiles%\app\app.exe")]
    assert got["Ports"] == list(range(1000, 1128))
    assert got["RemoteIPs"] == sorted(r["RemoteIP"] for r in rows)[:128]
    assert (got["PortCount"], got["RemoteIPCount"], got["ConnectionCount"]) == (300, 300, 300)


def test_distinct_machines_is_exact(spark):
    rows = [event(DeviceId=f"d{i}") for i in range(1500)] + [event(DeviceId="d0")]
    got = _policy(spark, rows)[("Outbound", r"%programfiles%\app\app.exe")]
    assert (got["DistinctMachines"], got["ConnectionCount"]) == (1500, 1501)


def test_outputs_have_the_contract_types(spark):
    df = build_policy(events_df(spark, [event()]), PolicyConfig(), DAY, NEXT_DAY)
    types = {f.name: f.dataType for f in df.schema.fields}
    assert types["ConnectionCount"] == T.LongType()
    assert types["DistinctMachines"] == T.LongType()
    assert (
        types["Ports"] == T.ArrayType(T.IntegerType(), True) or types["Ports"].elementType == T.IntegerType()
    )
    assert types["RemoteIPs"].elementType == T.StringType()
    assert types["window_start"] == T.DateType() and types["window_end"] == T.DateType()
