"""Benign-traffic rules: the rule file, the compiled predicates, and excluded traffic accounted for.

Spark jobs cost seconds, so every predicate case is a row of one frame evaluated in one job
(``results``), and the end-to-end case is one union collected once. Loading the shipped file and
bad files needs no Spark: ``unit/test_exclusion_rules.py``.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import PolicyConfig
from fwpolicy.query.seed import (
    DEVICE,
    INBOUND_DETAIL,
    PATH,
    POLICY_COLUMNS,
    connection_table,
    from_connections,
    matched_rows,
    where_clauses,
)
from fwpolicy.review.exclusions import load_rules

from helpers import DAY, EVENT_FIELDS, NEXT_DAY, event
from helpers import RULE_COLUMNS as COLUMNS
from helpers import SHIPPED_EXCLUSIONS as SHIPPED

EDGE_RULES = """\
rules:
  - {name: v4-host, action: tag, match: {remote_ip_cidr: [10.1.2.3/32]}}
  - {name: v4-all, action: tag, match: {remote_ip_cidr: [0.0.0.0/0]}}
  - {name: v4-24, action: tag, match: {remote_ip_cidr: [192.168.1.0/24]}}
  - {name: v6-32, action: tag, match: {remote_ip_cidr: ["2001:db8::/32"]}}
  - {name: v6-host, action: tag, match: {remote_ip_cidr: ["2001:db8::1/128"]}}
  - {name: v6-all, action: tag, match: {remote_ip_cidr: ["::/0"]}}
  - {name: v6-10, action: tag, match: {remote_ip_cidr: ["fe80::/10"]}}
  - {name: suffix, action: tag, match: {remote_url_suffix: [OneDrive.Live.com]}}
  - name: and-or
    action: tag
    match: {file_name: [a.exe, B.EXE], command_line_contains: [--sync, /S]}
"""
CIDRS = {
    "v4-host": "10.1.2.3/32",
    "v4-all": "0.0.0.0/0",
    "v4-24": "192.168.1.0/24",
    "v6-32": "2001:db8::/32",
    "v6-host": "2001:db8::1/128",
    "v6-all": "::/0",
    "v6-10": "fe80::/10",
}
ORDER_RULES = """\
rules:
  - {name: first, action: exclude, match: {file_name: [x.exe]}}
  - {name: tagged, action: tag, match: {file_name: [x.exe, y.exe]}}
  - {name: second, action: exclude, match: {file_name: [x.exe, y.exe]}}
"""

# --------------------------------------------------------------------------- cases
# (id, file name, command line, remote url, remote ip)

SCENARIO_CASES = {
    # id: (row, shipped tags expected)
    "maint": (
        ("schtasks.exe", r"schtasks.exe /run /tn \Microsoft\Windows\UpdateOrchestrator\Scan", "", ""),
        ["scheduled-maintenance"],
    ),
    "maint-case": (("WUAUCLT.EXE", "wuauclt.exe /detectnow", "", ""), ["scheduled-maintenance"]),
    "maint-miss": (("schtasks_helper.exe", "schtasks.exe /run", "", ""), []),
    "av": (("MsMpEng.exe", "", "wdcp.microsoft.com", ""), ["antivirus-endpoint-protection"]),
    "av-bd": (("bdagent.exe", "", "", ""), ["antivirus-endpoint-protection"]),
    "av-miss": (("MpCmdRun.exe", "MpCmdRun.exe -DownloadFile -url http://x", "", ""), []),
    "db": (
        ("sqlcmd.exe", "sqlcmd -S db1 -Q \"BACKUP DATABASE [Sales] TO DISK='\\\\bk01\\s.bak'\"", "", ""),
        ["database-backup"],
    ),
    "db-dump": (
        ("mysqldump.exe", r"mysqldump.exe --all-databases --result-file=\\nas\db.sql", "", ""),
        ["database-backup"],
    ),
    "db-miss": (("sqlservr.exe", r'"C:\Program Files\MSSQL\Binn\sqlservr.exe" -sMSSQLSERVER', "", ""), []),
    "db-miss-name": (("backupagent.exe", "backup --now", "", ""), []),
    "upd": (("CcmExec.exe", r"C:\Windows\CCM\CcmExec.exe", "", ""), ["software-update-deployment"]),
    "upd-choco": (("choco.exe", "choco upgrade all -y", "", ""), ["software-update-deployment"]),
    "upd-miss": (("chocolatey-agent.exe", "", "", ""), []),
    "sync": (("OneDrive.exe", "", "https://x.onedrive.live.com/sync?a=1", ""), ["cloud-sync"]),
    "sync-gd": (("GoogleDriveFS.exe", "", "www.googleapis.com", ""), ["cloud-sync"]),
    "sync-miss-url": (("OneDrive.exe", "", "evilonedrive.live.com", ""), []),
    "sync-miss-no-url": (("Dropbox.exe", "", "", ""), []),
    "sync-miss-name": (("chrome.exe", "", "onedrive.live.com", ""), []),
}

IP_CASES = {
    # remote ip: CIDR rules expected (in file order)
    "10.1.2.3": ["v4-host", "v4-all"],
    "10.1.2.4": ["v4-all"],
    "10.1.2.2": ["v4-all"],
    "0.0.0.0": ["v4-all"],
    "255.255.255.255": ["v4-all"],
    "192.168.0.255": ["v4-all"],
    "192.168.1.0": ["v4-all", "v4-24"],
    "192.168.1.255": ["v4-all", "v4-24"],
    "192.168.2.0": ["v4-all"],
    "::ffff:192.168.1.7": ["v4-all", "v4-24"],  # IPv4-mapped is IPv4 ...
    "::FFFF:10.1.2.3": ["v4-host", "v4-all"],
    "0:0:0:0:0:ffff:10.1.2.3": [],  # ... but only in the ::ffff: spelling; never IPv6
    "": [],
    "-": [],
    "10.1.2": [],
    "10.1.2.3.4": [],
    "256.1.1.1": [],
    "010.1.2.3": [],  # leading zeros: ambiguous, not an address
    " 10.1.2.3": [],
    "10.1.2.3/32": [],
    "::ffff:999.1.1.1": [],
    "2001:db8::1": ["v6-32", "v6-host", "v6-all"],
    "2001:DB8:0:0:0:0:0:1": ["v6-32", "v6-host", "v6-all"],
    "2001:db8::2": ["v6-32", "v6-all"],
    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff": ["v6-32", "v6-all"],
    "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff": ["v6-all"],
    "2001:db9::": ["v6-all"],
    "fe80::1%12": ["v6-all", "v6-10"],
    "febf:ffff::": ["v6-all", "v6-10"],
    "fec0::": ["v6-all"],
    "fe7f:ffff::": ["v6-all"],
    "::": ["v6-all"],
    "::1": ["v6-all"],
    "1:2:3:4:5:6:7::": ["v6-all"],
    "64:ff9b::10.1.2.3": ["v6-all"],  # an embedded quad that is not IPv4-mapped
    "2001:db8::1::2": [],
    "2001:db8::g": [],
    "2001:db8:0:0:0:0:0:0:1": [],
    "1:2:3:4:5:6:7:8::": [],
    "fe80::1%": [],
}

URL_CASES = {
    "onedrive.live.com": True,
    "x.onedrive.live.com": True,
    "A.B.OneDrive.Live.COM": True,
    "https://x.onedrive.live.com/path/onedrive.live.com": True,
    "x.onedrive.live.com:443": True,
    "onedrive.live.com.": True,
    "user@onedrive.live.com": True,
    "evilonedrive.live.com": False,
    "onedrive.live.com.evil.com": False,
    "evil.com/x.onedrive.live.com": False,
    "live.com": False,
    "": False,
}

AND_OR_CASES = {
    ("a.exe", "run --SYNC"): True,
    ("b.exe", "x /s y"): True,
    ("A.EXE", "/S"): True,
    ("a.exe", "run"): False,
    ("c.exe", "--sync"): False,
}


def random_addresses(n: int = 150) -> list[str]:
    """Addresses near the edges of ``CIDRS``, in several spellings, and a few non-addresses."""
    rng = random.Random(7)
    out = []
    v4_bases = [0x0A010203, 0xC0A80100, 0xC0A801FF, 0, 0xFFFFFFFF]
    v6_bases = [0x20010DB8 << 96, (0x20010DB9 << 96) - 1, 0xFE80 << 112, (0xFEC0 << 112) - 1, 1]
    for _ in range(n):
        kind = rng.random()
        if kind < 0.4:
            a = ipaddress.IPv4Address((rng.choice(v4_bases) + rng.randint(-3, 3)) % 2**32)
            out.append(rng.choice([str(a), f"::ffff:{a}", f"::FFFF:{a}"]))
        elif kind < 0.85:
            b = ipaddress.IPv6Address((rng.choice(v6_bases) + rng.randint(-3, 3)) % 2**128)
            out.append(rng.choice([str(b), b.exploded, b.exploded.upper(), str(b).upper()]))
        else:
            t = list(rng.choice(["10.1.2.3", "2001:db8::1", "fe80::1", "::ffff:10.1.2.3"]))
            t[rng.randrange(len(t))] = rng.choice(":.x0g")
            out.append("".join(t))
    return out


def reference_in(text: str, cidr: str) -> bool:
    """The documented semantics, with Python's ``ipaddress``."""
    net = ipaddress.ip_network(cidr)
    if net.version == 4:
        plain = text[7:] if text.lower().startswith("::ffff:") else text
        try:
            return ipaddress.IPv4Address(plain) in net
        except ValueError:
            return False
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return False
    return addr.version == 6 and addr.ipv4_mapped is None and addr in net


RANDOM_IPS = random_addresses()


@pytest.fixture(scope="module")
def rule_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    (d / "edges.yaml").write_text(EDGE_RULES)
    (d / "order.yaml").write_text(ORDER_RULES)
    return {
        "shipped": load_rules(SHIPPED),
        "edges": load_rules(d / "edges.yaml"),
        "order": load_rules(d / "order.yaml"),
    }


@pytest.fixture(scope="module")
def results(spark, rule_files):
    """Every predicate case in one frame and one job: id -> (tags, edge tags, excluded, ...)."""
    rows = [(f"s:{k}", *row) for k, (row, _) in SCENARIO_CASES.items()]
    rows += [(f"ip:{ip}", "", "", "", ip) for ip in IP_CASES]
    rows += [(f"rnd:{i}", "", "", "", ip) for i, ip in enumerate(RANDOM_IPS)]
    rows += [(f"url:{u}", "", "", u, "") for u in URL_CASES]
    rows += [(f"ao:{f}|{c}", f, c, "", "") for f, c in AND_OR_CASES]
    rows += [(f"order:{f}", f, "", "", "") for f in ("x.exe", "y.exe", "z.exe")]
    schema = (
        "id string, InitiatingProcessFileName string, InitiatingProcessCommandLine string, "
        "RemoteUrl string, RemoteIP string"
    )
    df = spark.createDataFrame(rows, schema)
    shipped, edges, order = rule_files["shipped"], rule_files["edges"], rule_files["order"]
    assert shipped.excluded_expr(COLUMNS) is None and edges.excluded_expr(COLUMNS) is None
    out = df.select(
        "id",
        shipped.tags_expr(COLUMNS).alias("shipped"),
        shipped.tags_expr(COLUMNS - {"RemoteUrl"}).alias("shipped_no_url"),
        edges.tags_expr(COLUMNS).alias("edges"),
        order.excluded_expr(COLUMNS).alias("excluded"),
        order.tags_expr(COLUMNS).alias("order_tags"),
    )
    return {r["id"]: r for r in out.collect()}


# --------------------------------------------------------------------------- the shipped file


@pytest.mark.parametrize("case", sorted(SCENARIO_CASES))
def test_shipped_rule_matches_its_scenario_and_not_a_near_miss(results, case):
    assert list(results[f"s:{case}"]["shipped"]) == SCENARIO_CASES[case][1]


def test_rule_needing_a_missing_column_never_matches(results):
    assert list(results["s:sync"]["shipped_no_url"]) == []
    assert list(results["s:maint"]["shipped_no_url"]) == ["scheduled-maintenance"]


def test_missing_column_is_warned_once(spark, caplog):
    rs = load_rules(SHIPPED)
    cols = COLUMNS - {"RemoteUrl"}
    with caplog.at_level(logging.WARNING, logger="fwpolicy.review.exclusions"):
        rs.tags_expr(cols)
        rs.tags_expr(cols)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'cloud-sync'" in warnings[0] and "RemoteUrl" in warnings[0] and str(SHIPPED) in warnings[0]


# --------------------------------------------------------------------------- predicate semantics


@pytest.mark.parametrize("ip", list(IP_CASES))
def test_cidr_edges(results, ip):
    got = [t for t in results[f"ip:{ip}"]["edges"] if t in CIDRS]
    assert got == IP_CASES[ip]


def test_cidr_agrees_with_python_ipaddress(results):
    mismatches = []
    for i, ip in enumerate(RANDOM_IPS):
        got = {t for t in results[f"rnd:{i}"]["edges"] if t in CIDRS}
        want = {name for name, cidr in CIDRS.items() if reference_in(ip, cidr)}
        if got != want:
            mismatches.append((ip, sorted(got), sorted(want)))
    assert not mismatches
    assert sum(bool(results[f"rnd:{i}"]["edges"]) for i in range(len(RANDOM_IPS))) > len(RANDOM_IPS) // 2


@pytest.mark.parametrize("url", list(URL_CASES))
def test_remote_url_suffix(results, url):
    assert ("suffix" in results[f"url:{url}"]["edges"]) is URL_CASES[url]


@pytest.mark.parametrize("case", list(AND_OR_CASES))
def test_match_keys_are_anded_and_values_ored(results, case):
    assert ("and-or" in results[f"ao:{case[0]}|{case[1]}"]["edges"]) is AND_OR_CASES[case]


def test_first_exclude_rule_in_file_order_wins_and_tags_are_independent(results):
    assert results["order:x.exe"]["excluded"] == "first"
    assert results["order:y.exe"]["excluded"] == "second"
    assert results["order:z.exe"]["excluded"] is None
    assert list(results["order:x.exe"]["order_tags"]) == ["tagged"]
    assert list(results["order:z.exe"]["order_tags"]) == []


def test_several_tags_come_in_file_order(results):
    assert list(results["ip:2001:db8::1"]["edges"]) == ["v6-32", "v6-host", "v6-all"]


# --------------------------------------------------------------------------- end to end

AV = r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.24090.11-0\MsMpEng.exe"
OD = r"C:\Users\bob\AppData\Local\Microsoft\OneDrive\OneDrive.exe"
SQL = r"C:\Program Files\Microsoft SQL Server\MSSQL16.MSSQLSERVER\MSSQL\Binn\sqlservr.exe"
APP = r"C:\Program Files\App\app.exe"
E2E_RULES = """\
rules:
  - {name: antivirus, action: tag, match: {file_name: [MsMpEng.exe]}}
  - name: backup-server
    action: exclude
    match: {file_name: [sqlservr.exe], remote_ip_cidr: [10.20.30.0/24]}
  - name: cloud-sync
    action: exclude
    match: {file_name: [OneDrive.exe], remote_url_suffix: [onedrive.live.com]}
"""


def e2e_events(spark):
    def ev(path, url="", cmd="", **kw):
        row = event(InitiatingProcessFolderPath=path, InitiatingProcessFileName=path.rsplit("\\", 1)[1], **kw)
        return {**row, "InitiatingProcessCommandLine": cmd, "RemoteUrl": url}

    inbound = {"LocalPort": 1433, "RemotePort": 50001, "DeviceId": "db-1"}
    rows = [
        ev(AV, DeviceId="dev-1", RemoteIP="20.1.1.1"),
        ev(AV, DeviceId="dev-1", RemoteIP="20.1.1.2"),
        ev(AV, DeviceId="dev-2", RemoteIP="20.1.1.1"),
        ev(OD, "x.onedrive.live.com", DeviceId="dev-1", RemoteIP="13.107.42.12"),
        ev(OD, "y.onedrive.live.com", DeviceId="dev-1", RemoteIP="13.107.42.12"),
        ev(OD, "https://onedrive.live.com/a", DeviceId="dev-3", RemoteIP="13.107.42.13"),
        ev(OD, "ONEDRIVE.LIVE.COM", DeviceId="dev-3", RemoteIP="13.107.42.13"),
        ev(SQL, ActionType="ListeningConnectionCreated", RemoteIP="", **inbound),
        ev(SQL, ActionType="InboundConnectionAccepted", RemoteIP="10.20.30.7", **inbound),
        ev(SQL, ActionType="InboundConnectionAccepted", RemoteIP="::ffff:10.20.30.8", **inbound),
        ev(SQL, ActionType="InboundConnectionAccepted", RemoteIP="10.9.9.9", **inbound),
        ev(APP, DeviceId="dev-1"),
        ev(APP, DeviceId="dev-2", RemotePort=80),
        ev(APP, DeviceId="dev-2", RemoteIPType="Loopback", RemoteIP="127.0.0.1"),  # removed by KQL
    ]
    fields = [*EVENT_FIELDS, ("InitiatingProcessCommandLine", T.StringType()), ("RemoteUrl", T.StringType())]
    schema = T.StructType([T.StructField(n, t) for n, t in fields])
    return spark.createDataFrame([tuple(r[n] for n, _ in fields) for r in rows], schema)


def test_end_to_end_tagged_kept_excluded_accounted_for(spark, tmp_path):
    """Policy and excluded_connections of one window, against the connections without rules.

    The full summaries run once, in one job; the rule-free side is the matched connection
    table summed per program (what ``ConnectionCount`` sums), which is cheap.
    """
    f = tmp_path / "rules.yaml"
    f.write_text(E2E_RULES)
    rs = load_rules(f)
    cfg = PolicyConfig()
    events = e2e_events(spark)
    excluded, tags = rs.expressions(events.columns)
    window = (DAY, NEXT_DAY)
    query = from_connections(
        connection_table(where_clauses(events, cfg, excluded, tags), window), cfg, window
    )
    policy = query.policy()
    excl = query.excluded()
    assert excl.columns[:3] == ["Rule", "Directionality", "AliasPath"] and "Excluded" not in excl.columns
    without_rules = (
        matched_rows(connection_table(where_clauses(events, cfg), window), cfg)
        .where(F.col("Facet").isin(DEVICE, INBOUND_DETAIL))  # each event is counted once in these
        .groupBy("Directionality", F.col(PATH).alias("AliasPath"))
        .agg(F.sum("Connections").alias("ConnectionCount"))
    )
    both = (
        policy.select(F.lit("policy").alias("table"), *POLICY_COLUMNS)
        .unionByName(
            excl.select(F.lit("excluded").alias("table"), "Rule", *POLICY_COLUMNS), allowMissingColumns=True
        )
        .unionByName(without_rules.withColumn("table", F.lit("baseline")), allowMissingColumns=True)
    )
    rows: dict[str, dict] = {"baseline": {}, "policy": {}, "excluded": {}}
    for r in both.collect():
        key = (r["Directionality"], re.sub(r"^.*\\", "", r["AliasPath"]).lower())
        rows[r["table"]][(r["Rule"], *key) if r["Rule"] else key] = r.asDict()
    base, pol, exc = rows["baseline"], rows["policy"], rows["excluded"]
    av, od = ("Outbound", "msmpeng.exe"), ("Outbound", "onedrive.exe")
    sql, app = ("Inbound", "sqlservr.exe"), ("Outbound", "app.exe")
    assert {k: v["ConnectionCount"] for k, v in base.items()} == {av: 3, od: 4, sql: 4, app: 2}

    # Tagged: its policy row is kept as it is, with the rule's name in Tags.
    assert pol[av]["Tags"] == ["antivirus"]
    assert (pol[av]["ConnectionCount"], pol[av]["DistinctMachines"]) == (3, 2)
    assert (pol[av]["Ports"], pol[av]["RemoteIPs"]) == ([443], ["20.1.1.1", "20.1.1.2"])
    assert (pol[app]["ConnectionCount"], pol[app]["Tags"]) == (2, [])

    # Excluded: gone from the policy, in excluded_connections with what it would have had.
    assert od not in pol
    cloud = exc[("cloud-sync", *od)]
    assert cloud["ConnectionCount"] == base[od]["ConnectionCount"]
    assert (cloud["DistinctMachines"], cloud["Ports"]) == (2, [443])
    assert cloud["RemoteIPs"] == ["13.107.42.12", "13.107.42.13"]

    # Partly excluded inbound program: the excluded accepts still meet their server key.
    assert pol[sql]["ConnectionCount"] == 2  # the listen and the accept from 10.9.9.9
    assert exc[("backup-server", *sql)]["ConnectionCount"] == 2  # 10.20.30.7, ::ffff:10.20.30.8
    assert set(exc) == {("cloud-sync", *od), ("backup-server", *sql)}

    # Nothing disappears: every connection is in the policy or in excluded_connections.
    def total(t: dict) -> int:
        return sum(r["ConnectionCount"] for r in t.values())

    assert total(pol) + total(exc) == total(base) == 13
