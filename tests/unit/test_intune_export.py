"""``fwpolicy export --format intune``: Microsoft Graph JSON of windowsFirewallRule, pure Python.

Rules are built here as ``RuleProposal``s (or from plain row dicts through ``build_rules``), so no
Spark session is needed. The golden file ``tests/golden/export/intune_rules.json`` was written by
hand from the Graph reference, not copied from the code's output; tests never rewrite it. The
read-from-Delta and CLI paths are in ``integration/test_export.py``.

Graph beta reference (microsoftgraph/microsoft-graph-docs-contrib, api-reference/beta/resources/):
``intune-deviceconfig-windowsfirewallrule.md`` and the enum pages it links.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fwpolicy.cli import build_parser
from fwpolicy.review.export import (
    FORMATS,
    GRAPH_MAX_RULES,
    NOT_WINDOWS,
    ExportOptions,
    RuleProposal,
    RuleSet,
    build_rules,
    one_line,
    render,
    review_listing,
    review_path,
)

from helpers import EXPORT_GOLDEN as GOLDEN
from helpers import EXPORT_GOLDEN_OPTIONS as GOLDEN_OPTIONS
from helpers import EXPORT_WINDOW, QUOTED_ALIAS

START, END = EXPORT_WINDOW
INTUNE = ExportOptions(fmt="intune", **GOLDEN_OPTIONS)

# windowsFirewallRule properties as documented, with the JSON type of each value.
STRING, INT, STRINGS = "string", "int", "strings"
DOCUMENTED_FIELDS = {
    "@odata.type": STRING,
    "displayName": STRING,
    "description": STRING,
    "packageFamilyName": STRING,
    "filePath": STRING,
    "serviceName": STRING,
    "protocol": INT,
    "localPortRanges": STRINGS,
    "remotePortRanges": STRINGS,
    "localAddressRanges": STRINGS,
    "remoteAddressRanges": STRINGS,
    "profileTypes": STRING,
    "action": STRING,
    "trafficDirection": STRING,
    "interfaceTypes": STRING,
    "edgeTraversal": STRING,
    "localUserAuthorizations": STRING,
}
# What every exported rule sets; plus its one port list, plus remoteAddressRanges when restricted.
ALWAYS = {
    "@odata.type",
    "displayName",
    "description",
    "filePath",
    "protocol",
    "trafficDirection",
    "action",
    "profileTypes",
}
PROFILE_FLAGS = {"domain", "private", "public"}  # windowsFirewallRuleNetworkProfileTypes, bar notConfigured


def proposal(**kw: Any) -> RuleProposal:
    """A ready outbound TCP rule unless told otherwise."""
    alias = kw.pop("alias_path", "%programfiles%\\app\\app.exe")
    direction = kw.pop("direction", "Outbound")
    fields: dict[str, Any] = {
        "name": f"fwpolicy {direction} {alias}",
        "direction": direction,
        "program": alias.replace("%programfiles%", "%ProgramFiles%"),
        "alias_path": alias,
        "protocol": "TCP",
        "ports": ("443",),
        "remote_addresses": (),
        "machines": 10,
        "days": 7,
        "connections": 100,
        "review": (),
    }
    fields.update(kw)
    return RuleProposal(**fields)


def rule_set(rules: list[RuleProposal], options: ExportOptions = INTUNE, **kw: Any) -> RuleSet:
    counts = {"rows_read": len(rules), "left_out": 0, **kw}
    return RuleSet(START, END, options, tuple(rules), counts["rows_read"], counts["left_out"])


PER_USER = (
    "program under %UserProfile%, a per-user folder: Windows Firewall expands variables in its "
    "service's context, not the user's, so the rule must be expanded per user (C:\\Users\\<name>\\...), "
    "and firewall_policy does not record user names"
)


def both_protocols(seen: str) -> str:
    return (
        f"protocols {seen}: New-NetFirewallRule takes ports only with -Protocol TCP or UDP "
        "(choose one or split the rule)"
    )


# The eight rules of the export golden files' snapshot (10 rows, 2 below the thresholds), in the
# order build_rules gives them: three ready, five flagged for review.
GOLDEN_RULES = [
    proposal(
        direction="Inbound",
        alias_path="%windir%\\system32\\svchost.exe",
        program="%SystemRoot%\\system32\\svchost.exe",
        ports=("135", "445", "3389", "5985-5986"),
        machines=12,
        connections=900,
    ),
    proposal(
        direction="Inbound",
        alias_path="/usr/sbin/sshd",
        program="/usr/sbin/sshd",
        ports=("22",),
        machines=3,
        connections=60,
        review=(NOT_WINDOWS,),
    ),
    proposal(
        alias_path="%programdata%\\fleet\\updater.exe",
        program="%ProgramData%\\fleet\\updater.exe",
        protocol="UDP",
        ports=("1024-1151",),
        remote_addresses=("10.1.0.0/25",),
        machines=30,
        connections=123456,
        review=("port list truncated: 128 of 200 shown", "remote address list truncated: 128 of 300 shown"),
    ),
    proposal(
        alias_path="%programfiles%\\google\\chrome\\application\\chrome.exe",
        ports=("80", "443"),
        remote_addresses=("142.250.1.0/30", "2607:f8b0:4004:800::200e"),
        machines=40,
        connections=5000,
    ),
    proposal(
        alias_path=QUOTED_ALIAS,
        protocol="UDP",
        ports=("5000-5002", "6000"),
        remote_addresses=("192.0.2.10",),
        machines=2,
        days=2,
        connections=40,
    ),
    proposal(
        alias_path="%programfilesx86%\\contoso\\agent\\<version>\\agent.exe",
        program="%ProgramFiles(x86)%\\contoso\\agent\\<version>\\agent.exe",
        ports=("8443",),
        remote_addresses=("40.90.4.1",),
        machines=3,
        days=2,
        connections=70,
        review=(
            "placeholder <version> in the path: Windows Firewall program paths take no wildcards "
            "(list the actual folders)",
        ),
    ),
    proposal(
        alias_path="%userprofile%\\appdata\\local\\microsoft\\teams\\current\\teams.exe",
        program="%UserProfile%\\appdata\\local\\microsoft\\teams\\current\\teams.exe",
        protocol="Any",
        ports=("443", "3478-3481"),
        remote_addresses=("52.112.0.1", "52.112.0.2"),
        machines=8,
        days=5,
        connections=3000,
        review=(PER_USER, both_protocols("TcpV4, UdpV4")),
    ),
    proposal(
        alias_path="%windir%\\system32\\svchost.exe",
        program="%SystemRoot%\\system32\\svchost.exe",
        protocol="Any",
        ports=("53", "80", "123", "443"),
        remote_addresses=("10.0.0.53", "10.0.0.54", "fe80::1"),
        machines=50,
        connections=20000,
        review=(both_protocols("Tcp, Udp"),),
    ),
]
READY = [r for r in GOLDEN_RULES if not r.review]
TO_REVIEW = [r for r in GOLDEN_RULES if r.review]


def golden_rule_set() -> RuleSet:
    return rule_set(GOLDEN_RULES, rows_read=10, left_out=2)


def golden(name: str) -> str:
    return (GOLDEN / name).read_text(encoding="utf-8")


def firewall_rules(text: str) -> list[dict[str, Any]]:
    return json.loads(text)["firewallRules"]


def row(**kw: Any) -> dict[str, Any]:
    """A ``firewall_policy`` row as ``read_snapshot`` returns it (enough evidence by default)."""
    r: dict[str, Any] = {
        "Directionality": "Outbound",
        "AliasPath": "%programfiles%\\app\\app.exe",
        "ConnectionCount": 100,
        "DistinctMachines": 10,
        "DaysObserved": 7,
        "Ports": [443],
        "PortCount": None,
        "Protocols": ["Tcp"],
        "RemoteIPs": ["20.1.1.1"],
        "RemoteIPCount": None,
        "window_start": START,
    }
    r.update(kw)
    r["PortCount"] = len(r["Ports"]) if r["PortCount"] is None else r["PortCount"]
    r["RemoteIPCount"] = len(r["RemoteIPs"]) if r["RemoteIPCount"] is None else r["RemoteIPCount"]
    return r


# --- the golden file ---------------------------------------------------------------------------


def test_golden_intune():
    assert render(golden_rule_set()) == golden("intune_rules.json")


def test_golden_rules_are_those_of_the_json_golden():
    """The rules above are the export snapshot's, so integration/test_export.py's golden test of
    the intune format (Spark snapshot -> build_rules -> render) expects the same file."""
    assert [r.to_dict() for r in GOLDEN_RULES] == json.loads(golden("rules.json"))["rules"]


def test_golden_is_ascii_and_sorted():
    text = golden("intune_rules.json")
    assert text.isascii() and text.endswith("}\n")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=True) + "\n"


# --- the documented shape ----------------------------------------------------------------------


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return INT
    if isinstance(value, str):
        return STRING
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return STRINGS
    return type(value).__name__


def check_documented_shape(rule: dict[str, Any]) -> None:
    assert set(rule) <= set(DOCUMENTED_FIELDS), set(rule) - set(DOCUMENTED_FIELDS)
    for field, value in rule.items():
        assert json_type(value) == DOCUMENTED_FIELDS[field], (field, value)
    assert rule["@odata.type"] == "#microsoft.graph.windowsFirewallRule"
    assert rule["action"] == "allowed"  # stateManagementSetting: notConfigured, blocked, allowed
    assert rule["trafficDirection"] in ("in", "out")  # windowsFirewallRuleTrafficDirectionType
    assert rule["protocol"] in (6, 17)  # "TCP = 6, UDP = 17"
    assert set(rule["profileTypes"].split(",")) == PROFILE_FLAGS
    ports = "localPortRanges" if rule["trafficDirection"] == "in" else "remotePortRanges"
    expected = ALWAYS | {ports} | ({"remoteAddressRanges"} if "remoteAddressRanges" in rule else set())
    assert set(rule) == expected
    assert rule[ports] and all(p.replace("-", "").isdigit() for p in rule[ports])
    assert rule.get("remoteAddressRanges", ["x"]), "an empty address list would read as no address"


@pytest.mark.parametrize("source", ["golden", "rendered"])
def test_every_rule_has_exactly_the_documented_fields_and_types(source):
    text = golden("intune_rules.json") if source == "golden" else render(golden_rule_set())
    rules = firewall_rules(text)
    assert len(rules) == len(READY) == 3
    for rule in rules:
        check_documented_shape(rule)


def test_the_document_is_a_graph_request_body_for_a_new_profile():
    doc = json.loads(render(golden_rule_set()))
    assert set(doc) == {"@odata.type", "displayName", "description", "firewallRules"}
    assert doc["@odata.type"] == "#microsoft.graph.windows10EndpointProtectionConfiguration"
    assert doc["displayName"] == "fwpolicy 2026-08-08"
    assert isinstance(doc["description"], str) and isinstance(doc["firewallRules"], list)


def test_directions_protocols_ports_and_addresses():
    rules = rule_set(
        [
            proposal(direction="Inbound", protocol="UDP", ports=("53", "5353-5355")),
            proposal(ports=("80", "443"), remote_addresses=("10.0.0.0/8", "2001:db8::1")),
            proposal(alias_path="c:\\tools\\b.exe", program="c:\\tools\\b.exe"),
        ]
    )
    inbound, outbound, plain = firewall_rules(render(rules))
    assert (inbound["trafficDirection"], inbound["protocol"]) == ("in", 17)
    assert inbound["localPortRanges"] == ["53", "5353-5355"] and "remotePortRanges" not in inbound
    assert "remoteAddressRanges" not in inbound  # none recorded: any address
    assert (outbound["trafficDirection"], outbound["protocol"]) == ("out", 6)
    assert outbound["remotePortRanges"] == ["80", "443"] and "localPortRanges" not in outbound
    assert outbound["remoteAddressRanges"] == ["10.0.0.0/8", "2001:db8::1"]
    assert plain["filePath"] == "c:\\tools\\b.exe"


def test_program_paths_and_port_ranges_are_those_of_the_other_formats():
    """Rows through build_rules: the same program-path conversion and consecutive-port ranges."""
    rows = [
        row(AliasPath="%programfilesx86%\\vendor\\a.exe", Ports=[8080, 8081, 8082, 9000]),
        row(Directionality="Inbound", AliasPath="%windir%\\system32\\svchost.exe", Ports=[135, 445]),
    ]
    rules = build_rules(rows, END, INTUNE, START)
    by_name = {r["displayName"]: r for r in firewall_rules(render(rules))}
    outbound = by_name["fwpolicy Outbound %programfilesx86%\\vendor\\a.exe"]
    assert outbound["filePath"] == "%ProgramFiles(x86)%\\vendor\\a.exe"
    assert outbound["remotePortRanges"] == ["8080-8082", "9000"]
    assert outbound["remoteAddressRanges"] == ["20.1.1.1"]
    inbound = by_name["fwpolicy Inbound %windir%\\system32\\svchost.exe"]
    assert inbound["filePath"] == "%SystemRoot%\\system32\\svchost.exe"
    assert inbound["localPortRanges"] == ["135", "445"]
    for rule in by_name.values():
        check_documented_shape(rule)


def test_remote_addresses_only_when_requested():
    rows = [row(RemoteIPs=["20.1.1.1", "20.1.1.2"])]
    without = build_rules(rows, END, ExportOptions(fmt="intune"), START)
    assert "remoteAddressRanges" not in firewall_rules(render(without))[0]
    with_ips = build_rules(rows, END, INTUNE, START)
    assert firewall_rules(render(with_ips))[0]["remoteAddressRanges"] == ["20.1.1.1", "20.1.1.2"]


# --- review: left out of the JSON, listed beside it --------------------------------------------


def test_rules_to_review_are_left_out_and_listed():
    rules = golden_rule_set()
    names = [r["displayName"] for r in firewall_rules(render(rules))]
    assert names == [r.name for r in READY]
    listing = review_listing(rules)
    assert listing is not None
    for rule in TO_REVIEW:
        assert rule.name not in names
        assert f"\n{rule.direction} {rule.alias_path}\n" in listing
        for reason in rule.review:
            assert f"  REVIEW: {reason}\n" in listing
    for rule in READY:
        assert f"\n{rule.direction} {rule.alias_path}\n" not in listing
    assert "# in the Intune JSON: 3 rules; listed here: 5\n" in listing
    assert "# rows: 10 read, 2 below the thresholds left out\n" in listing


def test_review_flags_from_rows_keep_rules_out_of_the_json():
    """Each review flag of build_rule, from plain rows: none of these rules reaches the JSON."""
    flagged = [
        row(AliasPath="%userprofile%\\appdata\\local\\app\\app.exe"),
        row(AliasPath="%temp%\\setup.exe"),
        row(AliasPath="%public%\\svc.exe"),
        row(AliasPath="%programfiles%\\a\\<version>\\a.exe"),
        row(AliasPath="/usr/bin/curl"),
        row(AliasPath="c:\\tools\\many.exe", Ports=list(range(2000, 2128)), PortCount=500),
        row(AliasPath="c:\\tools\\addrs.exe", RemoteIPs=["10.0.0.1"], RemoteIPCount=9),
        row(AliasPath="c:\\tools\\noports.exe", Ports=[]),
        row(AliasPath="c:\\tools\\both.exe", Protocols=["Tcp", "Udp"]),
        row(AliasPath="c:\\tools\\icmp.exe", Protocols=["Icmp"]),
        row(AliasPath="c:\\tools\\x.exe", Directionality="Sideways"),
    ]
    ready = row(AliasPath="c:\\tools\\ok.exe")
    rules = build_rules([*flagged, ready], END, INTUNE, START)
    assert all(r.review for r in rules.rules if r.alias_path != "c:\\tools\\ok.exe")
    exported = firewall_rules(render(rules))
    assert [r["displayName"] for r in exported] == ["fwpolicy Outbound c:\\tools\\ok.exe"]
    listing = review_listing(rules)
    for r in flagged:
        assert f"\n{r['Directionality']} {r['AliasPath']}\n" in listing


def test_thresholds_are_those_of_the_other_formats():
    rows = [
        row(AliasPath="c:\\a.exe", DistinctMachines=3, DaysObserved=4),
        row(AliasPath="c:\\b.exe", DistinctMachines=2, DaysObserved=9),
        row(AliasPath="c:\\c.exe", DistinctMachines=9, DaysObserved=3),
    ]
    options = ExportOptions(fmt="intune", min_machines=3, min_days=4)
    rules = build_rules(rows, END, options, START)
    doc = json.loads(render(rules))
    assert [r["filePath"] for r in doc["firewallRules"]] == ["c:\\a.exe"]
    assert "at least 3 machines and 4 days" in doc["description"]
    listing = review_listing(rules)
    assert "DistinctMachines >= 3, DaysObserved >= 4" in listing
    assert "# rows: 3 read, 2 below the thresholds left out" in listing


def test_a_rule_graph_cannot_express_is_listed_even_without_review_reasons():
    """A protocol other than TCP/UDP never comes without a review reason from build_rule; if a
    proposal had one anyway, it would be listed, not dropped or emitted with a wrong protocol."""
    odd = proposal(alias_path="c:\\odd.exe", program="c:\\odd.exe", protocol="Any")
    rules = rule_set([odd, proposal()])
    assert [r["filePath"] for r in firewall_rules(render(rules))] == ["%ProgramFiles%\\app\\app.exe"]
    reason = "protocol Any: a windowsFirewallRule with ports needs TCP or UDP"
    assert f"  REVIEW: {reason}\n" in review_listing(rules)


def test_nothing_to_review_still_writes_a_listing():
    rules = rule_set([proposal()])
    listing = review_listing(rules)
    assert listing.startswith("# fwpolicy: rules left out of the Intune export")
    assert "listed here: 0" in listing and "REVIEW" not in listing


def test_only_intune_has_a_review_listing():
    for fmt in ("powershell", "csv", "json"):
        assert review_listing(rule_set([proposal()], ExportOptions(fmt=fmt))) is None


def test_review_listing_path_is_beside_the_json():
    assert review_path(Path("out/intune.json")) == Path("out/intune.json.review.txt")
    assert review_path("rules") == Path("rules.review.txt")
    assert review_path("a.review.txt") != Path("a.review.txt")  # never the JSON itself


def test_more_rules_than_a_profile_takes_are_warned_about(caplog):
    paths = [f"c:\\apps\\{i:03d}.exe" for i in range(GRAPH_MAX_RULES + 1)]
    many = [proposal(alias_path=path, program=path) for path in paths]
    rules = rule_set(many)
    assert len(firewall_rules(render(rules))) == GRAPH_MAX_RULES + 1
    assert f"at most {GRAPH_MAX_RULES} firewallRules per profile" in review_listing(rules)
    assert any("at most 150" in r.getMessage() for r in caplog.records)
    assert "WARNING" not in review_listing(rule_set(many[:GRAPH_MAX_RULES]))


# --- values from the data are JSON strings -----------------------------------------------------

HOSTILE = [
    QUOTED_ALIAS,
    'c:\\q\\"quoted" \\\\server\\share\\a.exe',
    "c:\\web\\<script>alert('x')</script>\\a.exe",
    "c:\\x\\</script><!--\\a.exe",
    "c:\\line\nbreak\r\t\x00\x1b\\a.exe",
    "c:\\sep\u2028\u2029\u0085\\a.exe",
    "%programfiles%\\société\\日本\\😀.exe",
    "c:\\trailing\\backslash\\",
    '{"@odata.type": "#microsoft.graph.evil"}',
]


@pytest.mark.parametrize("value", HOSTILE)
def test_values_round_trip_as_json_strings(value):
    rule = proposal(
        name=f"fwpolicy Outbound {value}",
        alias_path=value,
        program=value,
        remote_addresses=("10.0.0.1",),
    )
    text = render(rule_set([rule]))
    assert text.isascii()
    exported = firewall_rules(text)[0]
    assert exported["displayName"] == f"fwpolicy Outbound {value}"
    assert exported["filePath"] == value
    assert exported["@odata.type"] == "#microsoft.graph.windowsFirewallRule"
    check_documented_shape(exported)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_on_one_line_of_the_listing(value):
    rule = proposal(alias_path=value, program=value, review=(f"reason about {value}",))
    listing = review_listing(rule_set([rule]))
    assert f"\nOutbound {one_line(value)}\n" in listing
    assert f"  REVIEW: reason about {one_line(value)}\n" in listing
    assert listing.count("\n") == len(listing.splitlines())  # no stray line breaks


def test_hostile_aliases_through_build_rules():
    """Quotes and backslashes a Windows path can hold are exported; ``<script>`` and ``"`` are
    not Windows path characters, so those rules are left out and listed."""
    rows = [
        row(AliasPath=QUOTED_ALIAS),
        row(AliasPath="c:\\web\\<script>\\a.exe"),
        row(AliasPath='c:\\q\\"x"\\a.exe'),
    ]
    rules = build_rules(rows, END, INTUNE, START)
    exported = firewall_rules(render(rules))
    assert [r["filePath"] for r in exported] == ["%ProgramFiles%\\o'neil & sons\\$env:app\\`run tool.exe"]
    listing = review_listing(rules)
    assert "\nOutbound c:\\web\\<script>\\a.exe\n" in listing
    assert '\nOutbound c:\\q\\"x"\\a.exe\n' in listing


# --- the command line --------------------------------------------------------------------------


def test_cli_offers_every_export_format():
    parser = build_parser()
    args = parser.parse_args(["export", "--output", "o", "--window-end", "2026-08-08", "--format", "intune"])
    assert args.format == "intune"
    sub = next(a for a in parser._actions if a.dest == "command")
    export = sub.choices["export"]
    choices = next(a.choices for a in export._actions if a.dest == "format")
    assert tuple(choices) == FORMATS
