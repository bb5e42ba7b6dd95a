"""``fwpolicy export``: rule building, the three renderers (golden files), quoting, errors.

Spark is used once: a module fixture writes a small hand-made ``firewall_policy`` table (two
windows) and reads the snapshot of one; the golden tests render that snapshot in pure Python.
One more read goes through the CLI end to end, one through the missing-window error.
The golden files in ``tests/golden/export/`` were checked by hand; tests never rewrite them.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import types as T

from fwpolicy.cli import main
from fwpolicy.config import ConfigError
from fwpolicy.query.seed import POLICY_COLUMNS
from fwpolicy.review.export import (
    NOT_WINDOWS,
    PS_SINGLE_QUOTES,
    ExportOptions,
    build_rule,
    build_rules,
    collapse_remote_addresses,
    csv_safe,
    firewall_program,
    firewall_protocol,
    port_ranges,
    powershell_command,
    ps_quote,
    read_snapshot,
    render,
    render_powershell,
)

from helpers import EXPORT_GOLDEN as GOLDEN
from helpers import EXPORT_GOLDEN_OPTIONS as GOLDEN_OPTIONS
from helpers import EXPORT_WINDOW, QUOTED_ALIAS

START, END = EXPORT_WINDOW
OLD_START, OLD_END = dt.date(2026, 7, 25), dt.date(2026, 8, 1)
SEEN = dt.datetime(2026, 8, 1, 9, 0, 0)

POLICY_SCHEMA = T.StructType(
    [
        T.StructField("Directionality", T.StringType()),
        T.StructField("AliasPath", T.StringType()),
        T.StructField("ConnectionCount", T.LongType()),
        T.StructField("DistinctMachines", T.LongType()),
        T.StructField("Ports", T.ArrayType(T.IntegerType())),
        T.StructField("RemoteIPs", T.ArrayType(T.StringType())),
        T.StructField("PortCount", T.LongType()),
        T.StructField("RemoteIPCount", T.LongType()),
        T.StructField("FirstSeen", T.TimestampType()),
        T.StructField("LastSeen", T.TimestampType()),
        T.StructField("DaysObserved", T.LongType()),
        T.StructField("DeviceDays", T.LongType()),
        T.StructField("Protocols", T.ArrayType(T.StringType())),
        T.StructField("TopRemoteUrls", T.ArrayType(T.StringType())),
        T.StructField("ExampleFileName", T.StringType()),
        T.StructField("ExamplePath", T.StringType()),
        T.StructField("Tags", T.ArrayType(T.StringType())),
        T.StructField("window_start", T.DateType()),
        T.StructField("window_end", T.DateType()),
    ]
)


def policy_row(**kw: Any) -> dict[str, Any]:
    """A ``firewall_policy`` row of the current window, enough evidence unless told otherwise."""
    row: dict[str, Any] = {
        "Directionality": "Outbound",
        "AliasPath": "%programfiles%\\app\\app.exe",
        "ConnectionCount": 100,
        "DistinctMachines": 10,
        "Ports": [443],
        "RemoteIPs": ["20.1.1.1"],
        "PortCount": None,
        "RemoteIPCount": None,
        "FirstSeen": SEEN,
        "LastSeen": SEEN + dt.timedelta(days=6),
        "DaysObserved": 7,
        "DeviceDays": 50,
        "Protocols": ["Tcp"],
        "TopRemoteUrls": [],
        "ExampleFileName": "app.exe",
        "ExamplePath": "C:\\Program Files\\App\\app.exe",
        "Tags": [],
        "window_start": START,
        "window_end": END,
    }
    row.update(kw)
    # Uncapped counts default to the shown lists, as summarize writes them below the cap.
    if row["PortCount"] is None:
        row["PortCount"] = len(row["Ports"])
    if row["RemoteIPCount"] is None:
        row["RemoteIPCount"] = len(row["RemoteIPs"])
    return row


def snapshot_rows() -> list[dict[str, Any]]:
    """The hand-made table: every review rule, both thresholds, and one row of another window."""
    return [
        policy_row(  # TCP, IPv4 hosts collapse to a /30, mapped IPv6 folds into IPv4, junk dropped
            AliasPath="%programfiles%\\google\\chrome\\application\\chrome.exe",
            ConnectionCount=5000,
            DistinctMachines=40,
            Ports=[80, 443],
            RemoteIPs=[
                "",
                "142.250.1.1",
                "142.250.1.2",
                "142.250.1.3",
                "2607:f8b0:4004:800::200e",
                "::ffff:142.250.1.0",
                "bogus",
            ],
            Protocols=["Tcp", "TcpV4"],
        ),
        policy_row(  # inbound: local ports, a range, no remote IPs recorded
            Directionality="Inbound",
            AliasPath="%windir%\\system32\\svchost.exe",
            ConnectionCount=900,
            DistinctMachines=12,
            Ports=[135, 445, 3389, 5985, 5986],
            RemoteIPs=[""],
            Protocols=["Tcp"],
            ExampleFileName="svchost.exe",
        ),
        policy_row(  # TCP and UDP: ports need one protocol -> review
            AliasPath="%windir%\\system32\\svchost.exe",
            ConnectionCount=20000,
            DistinctMachines=50,
            Ports=[53, 80, 123, 443],
            RemoteIPs=["10.0.0.53", "10.0.0.54", "fe80::1%12"],
            Protocols=["Tcp", "Udp"],
        ),
        policy_row(  # per-user folder -> review
            AliasPath="%userprofile%\\appdata\\local\\microsoft\\teams\\current\\teams.exe",
            ConnectionCount=3000,
            DistinctMachines=8,
            DaysObserved=5,
            Ports=[443, 3478, 3479, 3480, 3481],
            RemoteIPs=["52.112.0.1", "52.112.0.2"],
            Protocols=["TcpV4", "UdpV4"],
        ),
        policy_row(  # normalized profile placeholder -> review
            AliasPath="%programfilesx86%\\contoso\\agent\\<version>\\agent.exe",
            ConnectionCount=70,
            DistinctMachines=3,
            DaysObserved=2,
            Ports=[8443],
            RemoteIPs=["40.90.4.1"],
            Protocols=["Tcp"],
        ),
        policy_row(  # both lists cut at 128 -> review
            AliasPath="%programdata%\\fleet\\updater.exe",
            ConnectionCount=123456,
            DistinctMachines=30,
            Ports=list(range(1024, 1152)),
            PortCount=200,
            RemoteIPs=sorted(f"10.1.0.{i}" for i in range(128)),
            RemoteIPCount=300,
            Protocols=["Udp"],
        ),
        policy_row(  # quoting: ', $, backtick, spaces, & in the program path and display name
            AliasPath=QUOTED_ALIAS,
            ConnectionCount=40,
            DistinctMachines=2,
            DaysObserved=2,
            Ports=[5000, 5001, 5002, 6000],
            RemoteIPs=["192.0.2.10"],
            Protocols=["Udp"],
        ),
        policy_row(  # Linux: skipped in PowerShell, kept with a review reason in csv/json
            Directionality="Inbound",
            AliasPath="/usr/sbin/sshd",
            ConnectionCount=60,
            DistinctMachines=3,
            Ports=[22],
            RemoteIPs=[""],
            Protocols=["Tcp"],
        ),
        policy_row(  # one machine, one day: left out
            AliasPath="c:\\tools\\oneoff.exe", ConnectionCount=3, DistinctMachines=1, DaysObserved=1
        ),
        policy_row(  # five machines but one day: left out
            AliasPath="%programfiles%\\rare\\rare.exe", ConnectionCount=9, DistinctMachines=5, DaysObserved=1
        ),
        policy_row(  # another window: must not appear
            AliasPath="%programfiles%\\old\\old.exe", window_start=OLD_START, window_end=OLD_END
        ),
    ]


@pytest.fixture(scope="module")
def output_root(spark, tmp_path_factory) -> str:
    """A run's output root holding a two-window ``firewall_policy`` Delta table."""
    root = tmp_path_factory.mktemp("export")
    names = [f.name for f in POLICY_SCHEMA.fields]
    data = [tuple(r[n] for n in names) for r in snapshot_rows()]
    df = spark.createDataFrame(data, POLICY_SCHEMA)
    df.write.format("delta").partitionBy("window_end").save(str(root / "firewall_policy"))
    return str(root)


@pytest.fixture(scope="module")
def snapshot(spark, output_root) -> list[dict[str, Any]]:
    return read_snapshot(spark, output_root, END, include_remote_addresses=True)


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


# --- the snapshot and the golden files ---------------------------------------------------------


def test_schema_is_the_policy_schema():
    assert tuple(f.name for f in POLICY_SCHEMA.fields) == POLICY_COLUMNS


def test_snapshot_is_one_window_in_order(snapshot):
    keys = [(r["Directionality"], r["AliasPath"]) for r in snapshot]
    assert len(keys) == 10
    assert ("Outbound", "%programfiles%\\old\\old.exe") not in keys
    assert keys == sorted(keys)
    assert {r["window_start"] for r in snapshot} == {START}


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        ("powershell", "rules.ps1"),
        ("csv", "rules.csv"),
        ("json", "rules.json"),
        ("intune", "intune_rules.json"),
    ],
)
def test_golden(snapshot, fmt, name):
    rules = build_rules(snapshot, END, ExportOptions(fmt=fmt, **GOLDEN_OPTIONS), START)
    assert render(rules) == golden(name)


def test_cli_export_end_to_end(output_root, tmp_path):
    target = tmp_path / "rules.ps1"
    argv = ["-q", "export", "--output", output_root, "--window-end", END.isoformat()]
    argv += ["--format", "powershell", "--include-remote-addresses", "--to", str(target)]
    assert main(argv) == 0
    assert target.read_text(encoding="utf-8") == golden("rules.ps1")


def test_cli_export_intune_lists_rules_to_review_beside_the_json(output_root, tmp_path, capsys):
    """The Graph JSON holds only ready rules; the five flagged ones go to ``<to>.review.txt``."""
    target = tmp_path / "intune.json"
    argv = ["-q", "export", "--output", output_root, "--window-end", END.isoformat()]
    argv += ["--format", "intune", "--include-remote-addresses", "--to", str(target)]
    assert main(argv) == 0
    assert target.read_text(encoding="utf-8") == golden("intune_rules.json")
    listing_path = tmp_path / "intune.json.review.txt"
    assert str(listing_path) in capsys.readouterr().out
    listing = listing_path.read_text(encoding="utf-8")
    exported = {r["displayName"] for r in json.loads(golden("intune_rules.json"))["firewallRules"]}
    doc = json.loads(golden("rules.json"))
    for rule in doc["rules"]:
        block = f"\n{rule['direction']} {rule['alias_path']}\n"
        assert (block in listing) == bool(rule["review"]), rule["name"]
        assert (rule["name"] in exported) == (not rule["review"]), rule["name"]


def test_golden_json_matches_the_rules():
    """The JSON golden file, read as data: counts and review flags where the rows put them."""
    doc = json.loads(golden("rules.json"))
    meta = doc["metadata"]
    assert (meta["rows_read"], meta["rows_left_out"], meta["rules"], meta["rules_to_review"]) == (10, 2, 8, 5)
    by_path = {(r["direction"], r["alias_path"]): r for r in doc["rules"]}
    # CSV joins reasons with ';', so no reason may hold one.
    assert not [reason for r in doc["rules"] for reason in r["review"] if ";" in reason]
    assert by_path[("Inbound", "/usr/sbin/sshd")]["review"] == [NOT_WINDOWS]
    ready = sorted(k for k, r in by_path.items() if not r["review"])
    assert ready == [
        ("Inbound", "%windir%\\system32\\svchost.exe"),
        ("Outbound", "%programfiles%\\google\\chrome\\application\\chrome.exe"),
        ("Outbound", QUOTED_ALIAS),
    ]


# --- errors ------------------------------------------------------------------------------------


def test_missing_window_names_path_and_date(spark, output_root):
    missing = dt.date(2026, 7, 1)
    with pytest.raises(ConfigError) as err:
        read_snapshot(spark, output_root, missing)
    message = str(err.value)
    assert "firewall_policy" in message and output_root in message and "2026-07-01" in message
    assert "2026-08-08, 2026-08-01" in message  # the windows that do exist, latest first


def test_missing_table_names_path_and_date(spark, tmp_path):
    with pytest.raises(ConfigError, match=r"no firewall_policy Delta table at .*firewall_policy.*2026-08-08"):
        read_snapshot(spark, str(tmp_path), END)


def test_missing_table_exits_2_through_the_cli(tmp_path, capsys):
    argv = ["-q", "export", "--output", str(tmp_path), "--window-end", "2026-08-08", "--format", "csv"]
    assert main(argv) == 2
    assert "2026-08-08" in capsys.readouterr().err


@pytest.mark.parametrize(
    "kw",
    [{"fmt": "xml"}, {"min_machines": 0}, {"min_days": -1}, {"min_days": True}, {"min_machines": 1.5}],
)
def test_bad_options(kw):
    with pytest.raises(ConfigError):
        ExportOptions(**kw)


# --- ports, addresses, protocols, programs -----------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ([], []),
        ([443], ["443"]),
        ([443, 80], ["80", "443"]),
        ([80, 81], ["80-81"]),
        ([135, 445, 49152, 49153, 49154, 65535], ["135", "445", "49152-49154", "65535"]),
        ([3, 1, 2, 2, 5, 7, 6], ["1-3", "5-7"]),
        ([0, 65535, 65536, -1, None], ["0", "65535"]),
        (list(range(49152, 65536)), ["49152-65535"]),
    ],
)
def test_port_ranges(ports, expected):
    assert port_ranges(ports) == expected


@pytest.mark.parametrize(
    ("ips", "expected"),
    [
        ([], []),
        (["", "not-an-ip", "10.0.0.256", None], []),
        (["10.0.0.1"], ["10.0.0.1"]),
        (["10.0.0.0", "10.0.0.1"], ["10.0.0.0/31"]),
        (["10.0.0.1", "10.0.0.2"], ["10.0.0.1", "10.0.0.2"]),  # not one aligned block
        ([f"192.168.1.{i}" for i in range(256)], ["192.168.1.0/24"]),
        (["::ffff:192.168.1.162", "192.168.1.163"], ["192.168.1.162/31"]),
        (["2001:db8::1", "10.0.0.9", "2001:db8::"], ["10.0.0.9", "2001:db8::/127"]),
        (["fe80::1%12", " 10.0.0.9 "], ["10.0.0.9", "fe80::1"]),
        (["10.0.0.9", "10.0.0.9"], ["10.0.0.9"]),
    ],
)
def test_collapse_remote_addresses(ips, expected):
    assert collapse_remote_addresses(ips) == expected


@pytest.mark.parametrize(
    ("protocols", "expected"),
    [
        (["Tcp"], "TCP"),
        (["Tcp", "TcpV4", "TcpV6"], "TCP"),
        (["UdpV4", "Udp"], "UDP"),
        (["Tcp", "Udp"], "Any"),
        ([], "Any"),
        (["", None], "Any"),
        (["Icmp"], "Any"),
        (["Tcp", "Icmp"], "Any"),
    ],
)
def test_firewall_protocol(protocols, expected):
    assert firewall_protocol(protocols) == expected


@pytest.mark.parametrize(
    ("alias", "program", "reason"),
    [
        ("%windir%\\system32\\svchost.exe", "%SystemRoot%\\system32\\svchost.exe", None),
        ("%programfiles%\\a\\a.exe", "%ProgramFiles%\\a\\a.exe", None),
        ("%programfilesx86%\\a\\a.exe", "%ProgramFiles(x86)%\\a\\a.exe", None),
        ("%programdata%\\a\\a.exe", "%ProgramData%\\a\\a.exe", None),
        ("d:\\apps\\a.exe", "d:\\apps\\a.exe", None),
        ("%userprofile%\\appdata\\a.exe", "%UserProfile%\\appdata\\a.exe", "per-user folder"),
        ("%temp%\\setup.exe", "%Temp%\\setup.exe", "per-user folder"),
        ("%userprofile%b", "%UserProfile%b", "malformed alias"),
        ("%windir%dows\\x.exe", "%SystemRoot%dows\\x.exe", "malformed alias"),
        (
            "%programfiles%\\a\\<version>\\a.exe",
            "%ProgramFiles%\\a\\<version>\\a.exe",
            "placeholder <version>",
        ),
        ("%programdata%\\<guid>\\a.exe", "%ProgramData%\\<guid>\\a.exe", "no wildcards"),
        ("%foo%\\a.exe", "%foo%\\a.exe", "unknown environment variable %foo%"),
        ("<drive>\\tools\\psexec.exe", "<drive>\\tools\\psexec.exe", "path on any drive"),
        ("%public%\\svc.exe", "%Public%\\svc.exe", "writable by every user"),
        ("%userprofile%\\local\\slack\\app-<version>\\slack.exe", None, "placeholder <version>"),
        ("/usr/sbin/sshd", "/usr/sbin/sshd", NOT_WINDOWS),
        ("~/bin/tool", "~/bin/tool", NOT_WINDOWS),
        (
            "/applications/zoom.app/contents/macos/zoom",
            "/applications/zoom.app/contents/macos/zoom",
            NOT_WINDOWS,
        ),
        ("", "", "no program path"),
        ("\\device\\harddiskvolume3\\a.exe", "\\device\\harddiskvolume3\\a.exe", "device path"),
        ("\\\\?\\d:\\a.exe", "\\\\?\\d:\\a.exe", "device path"),
        ("svchost.exe", "svchost.exe", "not an absolute Windows path"),
        ("c:\\a\\b|c.exe", "c:\\a\\b|c.exe", "cannot hold"),
        ("c:\\a\nb.exe", "c:\\a\nb.exe", "control characters"),
    ],
)
def test_firewall_program(alias, program, reason):
    got, reasons = firewall_program(alias)
    assert program is None or got == program
    if reason is None:
        assert reasons == []
    else:
        assert any(reason in r for r in reasons), reasons


# --- rules: thresholds, review flags -----------------------------------------------------------


def test_thresholds_keep_rows_at_the_minimum_and_count_the_rest():
    rows = [
        policy_row(AliasPath="c:\\a.exe", DistinctMachines=3, DaysObserved=4),  # exactly at both
        policy_row(AliasPath="c:\\b.exe", DistinctMachines=2, DaysObserved=9),  # too few machines
        policy_row(AliasPath="c:\\c.exe", DistinctMachines=9, DaysObserved=3),  # too few days
        policy_row(AliasPath="c:\\d.exe", DistinctMachines=None, DaysObserved=None),
    ]
    rules = build_rules(rows, END, ExportOptions(min_machines=3, min_days=4))
    assert [r.alias_path for r in rules.rules] == ["c:\\a.exe"]
    assert (rules.rows_read, rules.left_out) == (4, 3)
    text = render_powershell(rules)
    assert "# rows: 4 read, 3 below the thresholds left out" in text
    assert "DistinctMachines >= 3, DaysObserved >= 4" in text
    lowest = build_rules(rows, END, ExportOptions(min_machines=1, min_days=1))
    assert [r.alias_path for r in lowest.rules] == [
        "c:\\a.exe",
        "c:\\b.exe",
        "c:\\c.exe",
    ]  # null: no evidence


def test_rules_are_ordered_whatever_the_input_order():
    rows = [
        policy_row(AliasPath="c:\\b.exe"),
        policy_row(Directionality="Inbound", AliasPath="c:\\z.exe"),
        policy_row(AliasPath="c:\\a.exe"),
    ]
    names = [r.name for r in build_rules(rows, END, ExportOptions()).rules]
    assert names == [
        "fwpolicy Inbound c:\\z.exe",
        "fwpolicy Outbound c:\\a.exe",
        "fwpolicy Outbound c:\\b.exe",
    ]
    assert build_rules(rows[::-1], END, ExportOptions()) == build_rules(rows, END, ExportOptions())


def test_truncated_port_list_is_flagged_not_emitted_partially():
    row = policy_row(Ports=list(range(2000, 2128)), PortCount=500)
    rule = build_rule(row)
    assert rule.ports == ("2000-2127",)
    assert "port list truncated: 128 of 500 shown" in rule.review
    rules = build_rules([row], END, ExportOptions())
    line = render_powershell(rules).splitlines()[-1]
    assert line.startswith("# New-NetFirewallRule ")


def test_truncated_address_list_is_flagged_only_when_addresses_are_exported():
    row = policy_row(RemoteIPs=[f"10.9.0.{i}" for i in range(128)], RemoteIPCount=129)
    assert build_rule(row, include_remote_addresses=False).review == ()
    rule = build_rule(row, include_remote_addresses=True)
    assert rule.remote_addresses == ("10.9.0.0/25",)
    assert rule.review == ("remote address list truncated: 128 of 129 shown",)


def test_counts_at_the_cap_are_not_flagged():
    row = policy_row(Ports=list(range(1, 129)), RemoteIPs=[f"10.9.0.{i}" for i in range(128)])
    assert build_rule(row, include_remote_addresses=True).review == ()


def test_only_invalid_addresses_are_flagged_and_empty_ones_are_not():
    assert build_rule(policy_row(RemoteIPs=["junk", ""]), True).review == (
        "no valid remote address among 1 recorded",
    )
    inbound = build_rule(policy_row(Directionality="Inbound", RemoteIPs=[""]), True)
    assert (inbound.remote_addresses, inbound.review) == ((), ())


def test_ports_with_two_protocols_or_none_are_flagged():
    both = build_rule(policy_row(Protocols=["Tcp", "UdpV6"]))
    assert both.protocol == "Any"
    assert any("-Protocol TCP or UDP" in r for r in both.review)
    none = build_rule(policy_row(Protocols=[]))
    assert none.protocol == "Any" and any("none recorded" in r for r in none.review)


def test_no_ports_is_flagged():
    assert "no ports recorded: the rule would allow every port" in build_rule(policy_row(Ports=[])).review


def test_inbound_rules_use_local_ports_and_outbound_remote_ports():
    rules = build_rules(
        [policy_row(Directionality="Inbound", Ports=[80, 443]), policy_row(Ports=[80, 443])],
        END,
        ExportOptions(),
    )
    inbound, outbound = (powershell_command(r, rules) for r in rules.rules)
    assert " -LocalPort 80,443 " in inbound and "-RemotePort" not in inbound
    assert " -RemotePort 80,443 " in outbound and "-LocalPort" not in outbound
    assert "-RemoteAddress" not in inbound + outbound  # not requested


def test_non_windows_rules_are_skipped_in_powershell_and_kept_elsewhere():
    rows = [policy_row(AliasPath="/usr/bin/curl")]
    ps = render(build_rules(rows, END, ExportOptions(fmt="powershell")))
    assert "# SKIPPED (not a Windows path): Outbound /usr/bin/curl" in ps
    assert "New-NetFirewallRule -DisplayName" not in ps
    csv_text = render(build_rules(rows, END, ExportOptions(fmt="csv")))
    assert "/usr/bin/curl" in csv_text and NOT_WINDOWS in csv_text
    doc = json.loads(render(build_rules(rows, END, ExportOptions(fmt="json"))))
    assert doc["rules"][0]["review"] == [NOT_WINDOWS]


def test_csv_cells_never_start_a_formula():
    assert csv_safe("=cmd|'/c calc'!A0") == "'=cmd|'/c calc'!A0"
    assert csv_safe("@SUM(1)") == "'@SUM(1)"
    assert csv_safe("%ProgramFiles%\\a.exe") == "%ProgramFiles%\\a.exe"


# --- PowerShell quoting ------------------------------------------------------------------------

PARAMETER = re.compile(r"-[A-Za-z]+")
BAREWORD = re.compile(r"(New-NetFirewallRule|Inbound|Outbound|Allow|TCP|UDP|Any|\d+(-\d+)?)")


def ps_parse(line: str) -> dict[str, list[str]]:
    """A strict tokenizer for the one command shape the exporter writes.

    Values are single-quoted literals (any of PowerShell's five single-quote characters opens
    or closes one; two in a row stand for one character) or a few known barewords, separated
    by spaces and commas. Anything else outside a literal (``$``, backtick, ``;``, ``(``, a
    quote left open...) fails. Returns each parameter's values, literals decoded.
    """
    params: dict[str, list[str]] = {}
    current: list[str] | None = None
    i, n = 0, len(line)
    words: list[str] = []
    while i < n:
        c = line[i]
        if c in " ,":
            i += 1
            continue
        if c in PS_SINGLE_QUOTES:
            i += 1
            value = []
            while True:
                assert i < n, f"unterminated literal in {line!r}"
                if line[i] in PS_SINGLE_QUOTES:
                    if i + 1 < n and line[i + 1] in PS_SINGLE_QUOTES:
                        value.append(line[i + 1])
                        i += 2
                        continue
                    i += 1
                    break
                value.append(line[i])
                i += 1
            assert i == n or line[i] in " ,", f"literal runs into {line[i:]!r}"
            assert current is not None, "a value before any parameter"
            current.append("".join(value))
            continue
        j = i
        while j < n and line[j] not in " ," + PS_SINGLE_QUOTES:
            j += 1
        word = line[i:j]
        i = j
        words.append(word)
        if PARAMETER.fullmatch(word) and not BAREWORD.fullmatch(word):
            current = params.setdefault(word[1:], [])
        else:
            assert BAREWORD.fullmatch(word), f"unexpected bareword {word!r} in {line!r}"
            if current is not None:
                current.append(word)
    assert words[0] == "New-NetFirewallRule"
    return params


PWSH_CHECK = r"""
$errors = $null
$ast = [System.Management.Automation.Language.Parser]::ParseFile($args[0], [ref]$null, [ref]$errors)
if ($errors.Count -gt 0) { $errors | ForEach-Object { Write-Output $_.Message }; exit 3 }
$cmd = $ast.FindAll({ param($n) $n -is [System.Management.Automation.Language.CommandAst] }, $true) |
    Select-Object -First 1
$els = $cmd.CommandElements
$out = @{}
for ($i = 1; $i -lt $els.Count - 1; $i++) {
    $v = $els[$i + 1]
    if ($els[$i] -is [System.Management.Automation.Language.CommandParameterAst] -and
        $v -is [System.Management.Automation.Language.StringConstantExpressionAst]) {
        $out[$els[$i].ParameterName] = $v.Value
    }
}
$out | ConvertTo-Json -Compress
"""


def pwsh_values(script: str, tmp_path: Path) -> dict[str, str]:
    """PowerShell's own parser: the string value of each parameter of the first command."""
    target, checker = tmp_path / "rule.ps1", tmp_path / "check.ps1"
    target.write_text(script, encoding="utf-8-sig")
    checker.write_text(PWSH_CHECK, encoding="utf-8")
    cmd = [
        shutil.which("pwsh") or "pwsh",
        "-NoProfile",
        "-NonInteractive",
        "-File",
        str(checker),
        str(target),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


HOSTILE = [
    QUOTED_ALIAS,
    "%programfiles%\\it's $(rm -rf) `$x\\a b.exe",
    "c:\\q\\\u2019; Remove-Item C:\\ -Recurse; \u2018\\x.exe",  # typographic quotes end strings too
    "c:\\q\\''\\'''\\x.exe",
]


@pytest.mark.parametrize("alias", HOSTILE)
def test_powershell_quoting_round_trips(alias, tmp_path):
    rules = build_rules([policy_row(AliasPath=alias)], END, ExportOptions())
    rule = rules.rules[0]
    assert rule.review == ()
    line = powershell_command(rule, rules)
    params = ps_parse(line)
    assert params["DisplayName"] == [rule.name] == [f"fwpolicy Outbound {alias}"]
    assert params["Program"] == [rule.program]
    assert params["Direction"] == ["Outbound"] and params["RemotePort"] == ["443"]
    assert params["Group"] == ["fwpolicy 2026-08-08"]
    if shutil.which("pwsh"):
        values = pwsh_values(line + "\n", tmp_path)
        assert values["DisplayName"] == rule.name and values["Program"] == rule.program


def test_pwsh_parses_the_golden_script(tmp_path):
    if not shutil.which("pwsh"):
        pytest.skip("pwsh is not installed")
    values = pwsh_values(golden("rules.ps1"), tmp_path)  # first live command: the svchost inbound rule
    assert values["Program"] == "%SystemRoot%\\system32\\svchost.exe"


def test_the_tokenizer_rejects_what_powershell_would_run():
    for bad in [
        "New-NetFirewallRule -DisplayName 'a'b",
        "New-NetFirewallRule -DisplayName 'it's'",
        "New-NetFirewallRule -DisplayName $x",
        "New-NetFirewallRule -DisplayName 'a' ; calc",
        "New-NetFirewallRule -DisplayName 'a\u2019 `calc",
    ]:
        with pytest.raises(AssertionError):
            ps_parse(bad)


def test_an_unknown_direction_is_quoted_and_flagged():
    rules = build_rules([policy_row(Directionality="Inbound; calc")], END, ExportOptions())
    rule = rules.rules[0]
    assert rule.review[0] == "direction 'Inbound; calc' is neither Inbound nor Outbound"
    assert ps_parse(powershell_command(rule, rules))["Direction"] == ["Inbound; calc"]
    assert render_powershell(rules).splitlines()[-1].startswith("# New-NetFirewallRule ")


def test_quotes_are_doubled():
    assert ps_quote("it's") == "'it''s'"
    assert ps_quote("a\u2019b") == "'a\u2019\u2019b'"
    assert ps_quote("$env:x `n") == "'$env:x `n'"


def test_line_breaks_cannot_escape_a_commented_rule():
    alias = "c:\\x\nRemove-Item C:\\ -Recurse\r\n\u2028#.exe"
    rules = build_rules([policy_row(AliasPath=alias)], END, ExportOptions())
    text = render_powershell(rules)
    body = [line for line in text.splitlines() if line]
    assert all(line.startswith("#") for line in body), text
    assert "\u2028" not in text
    assert any("control characters" in line for line in body)


def test_non_ascii_powershell_gets_a_byte_order_mark():
    ascii_text = render_powershell(build_rules([policy_row()], END, ExportOptions()))
    assert not ascii_text.startswith("\ufeff")
    text = render_powershell(
        build_rules([policy_row(AliasPath="%programfiles%\\société\\a.exe")], END, ExportOptions())
    )
    assert text.startswith("\ufeff") and "'%ProgramFiles%\\société\\a.exe'" in text
