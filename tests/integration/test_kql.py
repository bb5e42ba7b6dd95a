"""Each KQL semantic trap on its own, against the Column helpers and the whole query.

Spark jobs cost seconds, so each module builds one frame of all its cases and collects once;
every trap still has its own rows, its own group in the output, and its own test.
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import PolicyConfig
from fwpolicy.query.kql import kql_contains, kql_indexof, kql_startswith, kql_string, kql_substring
from fwpolicy.query.seed import firewall_policy

from helpers import DAY, NEXT_DAY, event, events_df, policy_dict
from kql_reference import kql_indexof as ref_indexof
from kql_reference import kql_substring as ref_substring
from kql_reference import reference_policy

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

INDEXOF_CASES = [
    ("abcdefg", "cde", 0, 2),
    ("abcdefg", "cde", -5, 2),  # negative start offsets from the end
    ("Hello, world, hello!", "lo", 5, 17),
    ("abc", "x", 0, -1),  # not found is -1
    (r"C:\Users\bob", "\\", 11, -1),
    (r"C:\Users\bob\x.exe", "\\", 11, 12),
    ("abc", "c", 7, -1),  # start past the end finds nothing
]


@pytest.fixture(scope="module")
def helper_results(spark):
    """Every substring and indexof case evaluated by the Column helpers in one job."""
    rows = [(f"s{i}", t, s, n) for i, (t, s, n, _) in enumerate(SUBSTRING_CASES)]
    rows += [(f"i{i}", t, s, None) for i, (t, _, s, _) in enumerate(INDEXOF_CASES)]
    df = spark.createDataFrame(rows, "id string, text string, start int, len int")
    sub = [
        F.when(
            F.col("id") == f"s{i}", kql_substring("text", F.col("start"), n if n is None else F.col("len"))
        )
        for i, (_, _, n, _) in enumerate(SUBSTRING_CASES)
    ]
    idx = [
        F.when(F.col("id") == f"i{i}", kql_indexof("text", lookup, F.col("start")).cast("string"))
        for i, (_, lookup, _, _) in enumerate(INDEXOF_CASES)
    ]
    # The same cases with Python-int arguments, which the helpers fold into literals.
    sub_lit = [
        F.when(F.col("id") == f"s{i}", kql_substring("text", s, n))
        for i, (_, s, n, _) in enumerate(SUBSTRING_CASES)
    ]
    idx_lit = [
        F.when(F.col("id") == f"i{i}", kql_indexof("text", lookup, s).cast("string"))
        for i, (_, lookup, s, _) in enumerate(INDEXOF_CASES)
    ]
    out = df.select(
        "id", F.coalesce(*sub, *idx).alias("r"), F.coalesce(*sub_lit, *idx_lit).alias("lit")
    ).collect()
    assert all(r["r"] == r["lit"] for r in out), [
        (r["id"], r["r"], r["lit"]) for r in out if r["r"] != r["lit"]
    ]
    return {r["id"]: r["r"] for r in out}


@pytest.mark.parametrize(("i", "case"), list(enumerate(SUBSTRING_CASES)))
def test_substring_matches_kql_rules(helper_results, i, case):
    text, start, length, expected = case
    assert helper_results[f"s{i}"] == expected
    assert ref_substring(text, start, length) == expected


@pytest.mark.parametrize(("i", "case"), list(enumerate(INDEXOF_CASES)))
def test_indexof_is_zero_based_and_minus_one_when_absent(helper_results, i, case):
    text, lookup, start, expected = case
    assert int(helper_results[f"i{i}"]) == expected
    assert ref_indexof(text, lookup, start) == expected


def test_string_helpers(spark):
    df = spark.createDataFrame(
        [(None,), (r"C:\USERS\Bob\x.exe",), (r"d:\WINDOWS\system32\x.exe",)], "s string"
    )
    rows = df.select(
        kql_string("s").alias("k"),
        kql_startswith(kql_string("s"), "c:\\users\\").alias("sw"),
        kql_contains(kql_string("s"), ":\\Windows\\").alias("ct"),
    ).collect()
    # Missing reads as ''; startswith and contains ignore case.
    assert [(r["k"], r["sw"], r["ct"]) for r in rows] == [
        ("", False, False),
        (r"C:\USERS\Bob\x.exe", True, False),
        (r"d:\WINDOWS\system32\x.exe", False, True),
    ]


# Texts whose lower-casing changes length or turns letters into other letters, beside the
# digits and dots of a caseless needle: the needle matches exactly where it matches the
# lower-cased text.
CASELESS_TEXTS = [
    "169.254.1.1",
    "\u0130169.254",
    "169.254\u0130",
    "\u212a169.254",
    "１６９.254",
    "169.25",
    "",
]


def test_caseless_needles_match_as_on_the_lowercased_text(spark):
    df = spark.createDataFrame([(t,) for t in CASELESS_TEXTS], "s string")
    rows = df.select(
        "s",
        kql_startswith("s", "169.254").alias("sw"),
        F.lower("s").startswith("169.254").alias("lower_sw"),
        kql_contains("s", "9.25").alias("ct"),
        F.lower("s").contains("9.25").alias("lower_ct"),
    ).collect()
    assert [(r["sw"], r["ct"]) for r in rows] == [(r["lower_sw"], r["lower_ct"]) for r in rows]
    assert [r["s"] for r in rows if r["sw"]] == ["169.254.1.1", "169.254\u0130"]
    # ... so such a needle spares the scan a case mapping per row; a needle with letters does not.
    assert "lower" not in str(kql_startswith("s", "169.254"))
    assert "lower" in str(kql_startswith("s", "c:\\users"))


def _app(trap: str) -> str:
    return rf"C:\Program Files\{trap}\app.exe"


def _alias(trap: str) -> str:
    return rf"%programfiles%\{trap.lower()}\app.exe"


def _listen(trap: str, **kw):
    base = dict(ActionType="ListeningConnectionCreated", LocalPort=445, RemoteIP="", RemotePort=0)
    return event(DeviceId=f"dev-{trap}", InitiatingProcessFolderPath=_app(trap), **{**base, **kw})


def _out(trap: str, **kw):
    return event(DeviceId=kw.pop("DeviceId", f"dev-{trap}"), InitiatingProcessFolderPath=_app(trap), **kw)


# Each trap: its own device and program, so its rows form their own groups.
TRAPS = {
    "null_remote_ip_type": [_out("null_remote_ip_type", RemoteIPType=None)],
    "both_ips_missing": [_out("both_ips_missing", LocalIP=None, RemoteIP=None)],
    "one_ip_missing": [_out("one_ip_missing", RemoteIP=None)],
    "case_sensitive_in": [
        _out("case_sensitive_in", RemoteIPType="loopback"),  # not 'Loopback': kept
        _out("case_sensitive_in", RemoteIPType="Loopback"),  # dropped
        _out("case_sensitive_in", ActionType="connectionsuccess"),  # `in` is case-sensitive
    ],
    "link_local": [_out("link_local", RemoteIP="169.254.3.4"), _out("link_local", RemoteIP="169.25.1.1")],
    "null_ports": [_out("null_ports", LocalPort=None), _out("null_ports", RemotePort=None)],
    "join_case": [
        _listen("join_case"),
        # Same device and port, path differing only in case: not the server key in KQL.
        event(
            DeviceId="dev-join_case",
            LocalPort=445,
            RemoteIP="10.1.1.1",
            InitiatingProcessFolderPath=_app("JOIN_case"),
        ),
    ],
    "cap": [_out("cap", RemotePort=1000 + i, RemoteIP=f"20.0.{i // 250}.{i % 250}") for i in range(300)],
    "exact_dcount": [_out("exact_dcount", DeviceId=f"d{i}") for i in range(1500)]
    + [_out("exact_dcount", DeviceId="d0")],
    "listener_counts": [
        _listen("listener_counts"),
        _out("listener_counts", ActionType="InboundConnectionAccepted", LocalPort=445, RemoteIP="10.9.9.9"),
        _out("listener_counts", ActionType="ConnectionSuccess", LocalPort=139, RemoteIP="10.9.9.9"),
    ],
}
ALL_ROWS = [r for rows in TRAPS.values() for r in rows]


@pytest.fixture(scope="module")
def trap_policy(spark):
    return policy_dict(firewall_policy(events_df(spark, ALL_ROWS), PolicyConfig(), DAY, NEXT_DAY))


def test_traps_agree_with_the_reference(trap_policy):
    assert trap_policy == reference_policy(ALL_ROWS)


def test_null_remote_ip_type_is_not_loopback(trap_policy):
    # In Spark, null != 'Loopback' is null and drops the row; in KQL '' != 'Loopback' keeps it.
    assert trap_policy[("Outbound", _alias("null_remote_ip_type"))]["ConnectionCount"] == 1


def test_both_ips_missing_count_as_equal(trap_policy):
    # KQL: '' != '' is false, so a row with neither IP is removed by LocalIP != RemoteIP.
    assert ("Outbound", _alias("both_ips_missing")) not in trap_policy


def test_one_missing_ip_is_an_empty_string_value(trap_policy):
    assert trap_policy[("Outbound", _alias("one_ip_missing"))]["RemoteIPs"] == [""]


def test_loopback_and_action_types_are_case_sensitive(trap_policy):
    assert trap_policy[("Outbound", _alias("case_sensitive_in"))]["ConnectionCount"] == 1


def test_link_local_prefix_is_dropped(trap_policy):
    assert trap_policy[("Outbound", _alias("link_local"))]["RemoteIPs"] == ["169.25.1.1"]


def test_null_ports_pass_no_where_clause(trap_policy):
    got = trap_policy[("Outbound", _alias("null_ports"))]
    # The null LocalPort row is in neither leg; the null RemotePort row counts but has no port.
    assert (got["ConnectionCount"], got["Ports"], got["PortCount"]) == (1, [], 0)


def test_join_keys_are_case_sensitive(trap_policy):
    # Both paths alias to the same lower-cased group, but only the listener's exact path is a
    # server key, so the other-case ConnectionSuccess on 445 is not counted.
    assert trap_policy[("Inbound", _alias("join_case"))] == {
        "ConnectionCount": 1,
        "DistinctMachines": 1,
        "Ports": [445],
        "RemoteIPs": [""],
        "PortCount": 1,
        "RemoteIPCount": 1,
    }


def test_makeset_caps_at_128_keeping_the_smallest(trap_policy):
    got = trap_policy[("Outbound", _alias("cap"))]
    assert got["Ports"] == list(range(1000, 1128))
    assert got["RemoteIPs"] == sorted(r["RemoteIP"] for r in TRAPS["cap"])[:128]
    assert (got["PortCount"], got["RemoteIPCount"], got["ConnectionCount"]) == (300, 300, 300)


def test_distinct_machines_is_exact(trap_policy):
    got = trap_policy[("Outbound", _alias("exact_dcount"))]
    assert (got["DistinctMachines"], got["ConnectionCount"]) == (1500, 1501)


def test_listener_and_accept_are_inbound_rows_but_unkeyed_ports_are_not(trap_policy):
    got = trap_policy[("Inbound", _alias("listener_counts"))]
    # The listen and the accept on 445 count; a low-port ConnectionSuccess on 139 has no key.
    assert (got["ConnectionCount"], got["Ports"]) == (2, [445])


def test_outputs_have_the_contract_types(spark):
    df = firewall_policy(events_df(spark, [event()]), PolicyConfig(), DAY, NEXT_DAY)
    types = {f.name: f.dataType for f in df.schema.fields}
    assert types["ConnectionCount"] == T.LongType()
    assert types["DistinctMachines"] == T.LongType()
    assert types["PortCount"] == T.LongType() and types["RemoteIPCount"] == T.LongType()
    assert types["Ports"].elementType == T.IntegerType()
    assert types["RemoteIPs"].elementType == T.StringType()
    assert types["window_start"] == T.DateType() and types["window_end"] == T.DateType()
