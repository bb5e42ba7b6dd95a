"""Turn one ``firewall_policy`` snapshot into draft allow rules: PowerShell, CSV, JSON or Intune.

``python -m fwpolicy export --output DIR --window-end DATE --format {powershell,csv,json,intune}``

One allow rule per program and direction, with its ports (consecutive ports become ranges) and,
on request, its remote addresses (CIDR-collapsed). Three layers, each testable on its own:

* ``read_snapshot``: the one Spark step, reads the ``window_end`` partition and collects it;
* ``build_rules``: pure Python, rows -> ``RuleSet`` of ``RuleProposal``s, thresholds applied;
* ``render``: pure Python, ``RuleSet`` -> text in the chosen format (and, for ``intune``,
  ``review_listing``: the rules left out of it).

A rule is never silently narrower or broader than the evidence. Anything the table cannot say
with certainty is flagged in the rule's ``review`` reasons instead (PowerShell output emits such
rules commented out, each reason on a ``# REVIEW:`` line; Intune output leaves them out of its
JSON and lists them, with their reasons, in a separate review listing):

* the 128-value cap cut the port list (``PortCount`` > shown) or, with remote addresses, the
  address list (``RemoteIPCount`` > shown);
* no ports recorded (the rule would allow every port);
* protocols that are not one of TCP or UDP (``New-NetFirewallRule`` takes ``-LocalPort`` and
  ``-RemotePort`` only with ``-Protocol TCP`` or ``UDP``);
* a program path Windows Firewall cannot use as is: a per-user folder (``%UserProfile%``,
  ``%Temp%``...), the shared ``%Public%``, a ``<version>``/``<guid>`` placeholder or a
  ``<drive>`` (profile ``normalized``), a quirk of the ``kql`` profile such as
  ``%userprofile%b``, a device path, an empty path, or a path that is not a Windows path at all
  (Linux/macOS; skipped in PowerShell output, kept in CSV/JSON);
* a ``Directionality`` other than ``Inbound``/``Outbound``.

Program paths: Microsoft's Windows Firewall documentation ("Firewall Rule Wizard: Program
Page") says a program path may include environment variables, and recommends against
variables that resolve only in a user's context such as ``%USERPROFILE%``: the firewall service
evaluates them in its own context, not the user's. Windows' own rules use ``%SystemRoot%`` and
``%ProgramFiles%``. So machine-wide aliases map to their variables (``%windir%`` ->
``%SystemRoot%``, ``%programfilesx86%`` -> ``%ProgramFiles(x86)%``...), and per-user ones are
flagged: a rule would have to be expanded per user (``C:\\Users\\<name>\\...``), and
``firewall_policy`` does not record user names.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fwpolicy.config import ConfigError
from fwpolicy.io.sink import table_path
from fwpolicy.io.storage import is_delta_table

log = logging.getLogger(__name__)

FORMATS = ("powershell", "csv", "json", "intune")
POLICY_TABLE = "firewall_policy"
INBOUND, OUTBOUND = "Inbound", "Outbound"
DIRECTIONS = (INBOUND, OUTBOUND)
NOT_WINDOWS = "not a Windows path"

# Columns the export needs; RemoteIPs only when remote addresses are requested.
SNAPSHOT_COLUMNS = (
    "Directionality",
    "AliasPath",
    "ConnectionCount",
    "DistinctMachines",
    "DaysObserved",
    "Ports",
    "PortCount",
    "Protocols",
    "window_start",
)
REMOTE_COLUMNS = ("RemoteIPs", "RemoteIPCount")

# Machine-wide folders: the firewall service expands these to the same folder as any user.
MACHINE_VARIABLES = {
    "%windir%": "%SystemRoot%",
    "%systemroot%": "%SystemRoot%",
    "%programfiles%": "%ProgramFiles%",
    "%programfilesx86%": "%ProgramFiles(x86)%",  # the alias drops the parentheses
    "%programfiles(x86)%": "%ProgramFiles(x86)%",
    "%programdata%": "%ProgramData%",
    "%systemdrive%": "%SystemDrive%",
}
# Per-user folders: the service would expand these in its own profile, not the user's.
USER_VARIABLES = {
    "%userprofile%": "%UserProfile%",
    "%temp%": "%Temp%",
    "%tmp%": "%Tmp%",
    "%appdata%": "%AppData%",
    "%localappdata%": "%LocalAppData%",
}
# The normalized profile folds every drive letter to "<drive>" and C:\Users\Public to %public%.
ANY_DRIVE = "<drive>\\"
_VARIABLE = re.compile(r"%[^%\\/]+%")
_DRIVE = re.compile(r"[a-z]:\\", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"<[^<>\\]*>")
_NOT_IN_WINDOWS_PATHS = set('<>"|?*')

# PowerShell treats the typographic single quotes as quote characters too.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
# Characters that end a line for PowerShell or a reader; never allowed inside one output line.
_LINE_BREAKS = {"\u0085", "\u2028", "\u2029"}

CSV_COLUMNS = (
    "name",
    "direction",
    "program",
    "protocol",
    "ports",
    "remote_addresses",
    "machines",
    "days",
    "connections",
    "review",
    "alias_path",
)


@dataclass(frozen=True)
class ExportOptions:
    """What ``export`` emits: format, minimum evidence, and whether to restrict remote addresses."""

    fmt: str = "powershell"
    min_machines: int = 2
    min_days: int = 2
    include_remote_addresses: bool = False

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"export format must be one of {FORMATS}, got {self.fmt!r}")
        for name in ("min_machines", "min_days"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class RuleProposal:
    """One draft allow rule: a program in one direction, with the evidence behind it.

    ``ports`` are local ports for inbound rules and remote ports for outbound ones, as strings
    (``"135"``, ``"49152-65535"``). ``remote_addresses`` is empty when not restricted.
    ``review`` lists why the rule must not be applied as is; empty means ready to apply.
    """

    name: str
    direction: str
    program: str
    alias_path: str
    protocol: str
    ports: tuple[str, ...]
    remote_addresses: tuple[str, ...]
    machines: int
    days: int
    connections: int
    review: tuple[str, ...] = ()

    @property
    def is_windows(self) -> bool:
        return NOT_WINDOWS not in self.review

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "program": self.program,
            "alias_path": self.alias_path,
            "protocol": self.protocol,
            "ports": list(self.ports),
            "remote_addresses": list(self.remote_addresses),
            "evidence": {"machines": self.machines, "days": self.days, "connections": self.connections},
            "review": list(self.review),
        }


@dataclass(frozen=True)
class RuleSet:
    """The rules of one snapshot, and what was left out of it."""

    window_start: dt.date | None
    window_end: dt.date
    options: ExportOptions
    rules: tuple[RuleProposal, ...]
    rows_read: int
    left_out: int  # rows below the thresholds

    @property
    def to_review(self) -> int:
        return sum(1 for r in self.rules if r.review)

    @property
    def not_windows(self) -> int:
        return sum(1 for r in self.rules if not r.is_windows)

    @property
    def group(self) -> str:
        return f"fwpolicy {self.window_end.isoformat()}"


# ---------------------------------------------------------------------------------------------
# Rule building (pure Python)
# ---------------------------------------------------------------------------------------------


def port_ranges(ports: Iterable[int | None]) -> list[str]:
    """Sorted distinct ports as strings, consecutive runs as ``"a-b"``; invalid ports dropped."""
    valid = sorted({p for p in ports if isinstance(p, int) and 0 <= p <= 65535})
    out: list[str] = []
    i = 0
    while i < len(valid):
        j = i
        while j + 1 < len(valid) and valid[j + 1] == valid[j] + 1:
            j += 1
        out.append(str(valid[i]) if i == j else f"{valid[i]}-{valid[j]}")
        i = j + 1
    return out


def parse_address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, IPv4-mapped IPv6 as IPv4, zone index dropped; None for '' or invalid."""
    if not text or not text.strip():
        return None
    try:
        ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def collapse_remote_addresses(ips: Iterable[str | None]) -> list[str]:
    """Remote IPs as the fewest CIDR blocks: IPv4 first, then IPv6, each ascending.

    Single hosts are written as plain addresses; '' and invalid entries are dropped.
    """
    v4: list[ipaddress.IPv4Network] = []
    v6: list[ipaddress.IPv6Network] = []
    for text in ips:
        ip = parse_address(text)
        if isinstance(ip, ipaddress.IPv4Address):
            v4.append(ipaddress.IPv4Network(ip))
        elif isinstance(ip, ipaddress.IPv6Address):
            v6.append(ipaddress.IPv6Network(ip))
    out = []
    for nets in (v4, v6):
        for net in ipaddress.collapse_addresses(nets):
            out.append(str(net.network_address) if net.num_addresses == 1 else net.with_prefixlen)
    return out


def firewall_protocol(protocols: Iterable[str | None]) -> str:
    """``TCP`` or ``UDP`` when every observed protocol is that one, else ``Any``.

    Defender reports ``Tcp``, ``TcpV4``, ``TcpV6``, ``Udp``, ``UdpV4``... Any other value (or
    none at all) leaves the protocol open.
    """
    kinds = set()
    for p in protocols:
        name = (p or "").strip().lower()
        if not name:
            continue
        kinds.add("TCP" if name.startswith("tcp") else "UDP" if name.startswith("udp") else name)
    return kinds.pop() if len(kinds) == 1 and kinds <= {"TCP", "UDP"} else "Any"


def firewall_program(alias: str) -> tuple[str, list[str]]:
    """The program path as Windows Firewall takes it, and why it needs review (if it does).

    ``alias`` is an ``AliasPath`` (lower-cased). Windows paths are case-insensitive, so only
    the variable is re-cased. A path that is not a Windows path comes back unchanged with the
    reason ``NOT_WINDOWS``.
    """
    reasons: list[str] = []
    if not alias:
        return alias, ["no program path recorded: a rule without a program would allow every program"]
    if alias.startswith(("/", "~")):
        return alias, [NOT_WINDOWS]
    if any(unicodedata.category(c) == "Cc" or c in _LINE_BREAKS for c in alias):
        reasons.append("program path contains control characters")
    program = alias
    var = _VARIABLE.match(alias)
    if var:
        name = var.group(0).lower()
        rest = alias[var.end() :]
        if name in MACHINE_VARIABLES:
            program = MACHINE_VARIABLES[name] + rest
        elif name == "%public%":
            program = "%Public%" + rest
            reasons.append(
                "program under %Public% (C:\\Users\\Public), shared and writable by every user: "
                "a hunting lead rather than a rule to allow as is"
            )
        elif name in USER_VARIABLES:
            program = USER_VARIABLES[name] + rest
            reasons.append(
                f"program under {USER_VARIABLES[name]}, a per-user folder: Windows Firewall expands "
                "variables in its service's context, not the user's, so the rule must be expanded "
                "per user (C:\\Users\\<name>\\...), and firewall_policy does not record user names"
            )
        else:
            reasons.append(f"unknown environment variable {var.group(0)} in the program path")
        if rest and not rest.startswith("\\"):
            reasons.append(
                f"malformed alias: no backslash after {var.group(0)} (a quirk of the kql alias "
                "profile: find the real folder before using this rule)"
            )
        body = rest
    elif alias.startswith(("\\\\?\\", "\\\\.\\", "\\??\\")) or alias.lower().startswith("\\device\\"):
        return alias, ["device path: Windows Firewall needs a drive-letter path or a variable"]
    elif _DRIVE.match(alias):
        body = alias[3:]
    elif alias.startswith(ANY_DRIVE):
        reasons.append(
            "path on any drive (<drive>, normalized profile): Windows Firewall needs the drive "
            "letter (ExamplePath in firewall_policy shows one)"
        )
        body = alias[len(ANY_DRIVE) :]
    elif alias.startswith("\\\\"):
        body = alias[2:]
    else:
        return alias, ["not an absolute Windows path"]
    placeholders = sorted(set(_PLACEHOLDER.findall(body)))
    if placeholders:
        reasons.append(
            f"placeholder {', '.join(placeholders)} in the path: Windows Firewall program paths take "
            "no wildcards (list the actual folders)"
        )
    elif any(c in _NOT_IN_WINDOWS_PATHS for c in body):
        reasons.append('characters that Windows paths cannot hold (<>"|?*)')
    return program, reasons


def _count(value: Any) -> int:
    return int(value) if value is not None else 0


def build_rule(row: Mapping[str, Any], include_remote_addresses: bool = False) -> RuleProposal:
    """One ``firewall_policy`` row -> one ``RuleProposal`` (thresholds are not checked here)."""
    direction = row["Directionality"] or ""
    alias = row["AliasPath"] or ""
    program, reasons = firewall_program(alias)
    if direction not in DIRECTIONS:
        reasons.insert(0, f"direction {direction!r} is neither {INBOUND} nor {OUTBOUND}")

    raw_ports = [p for p in (row.get("Ports") or []) if p is not None]
    ports = port_ranges(raw_ports)
    port_count = _count(row.get("PortCount"))
    if port_count > len(raw_ports):
        reasons.append(f"port list truncated: {len(raw_ports)} of {port_count} shown")
    if not ports:
        reasons.append("no ports recorded: the rule would allow every port")

    protocols = [p for p in (row.get("Protocols") or []) if p]
    protocol = firewall_protocol(protocols)
    if protocol == "Any" and ports:
        seen = ", ".join(sorted(set(protocols))) or "none recorded"
        reasons.append(
            f"protocols {seen}: New-NetFirewallRule takes ports only with -Protocol TCP or UDP "
            "(choose one or split the rule)"
        )

    addresses: list[str] = []
    if include_remote_addresses:
        raw_ips = [ip for ip in (row.get("RemoteIPs") or []) if ip is not None]
        addresses = collapse_remote_addresses(raw_ips)
        ip_count = _count(row.get("RemoteIPCount"))
        if ip_count > len(raw_ips):
            reasons.append(f"remote address list truncated: {len(raw_ips)} of {ip_count} shown")
        recorded = [ip for ip in raw_ips if ip.strip()]
        if recorded and not addresses:
            reasons.append(f"no valid remote address among {len(recorded)} recorded")
        # Only '' recorded (inbound rows unless the run kept inbound IPs): any remote address.

    return RuleProposal(
        name=f"fwpolicy {direction} {alias}",
        direction=direction,
        program=program,
        alias_path=alias,
        protocol=protocol,
        ports=tuple(ports),
        remote_addresses=tuple(addresses),
        machines=_count(row.get("DistinctMachines")),
        days=_count(row.get("DaysObserved")),
        connections=_count(row.get("ConnectionCount")),
        review=tuple(reasons),
    )


def meets_thresholds(row: Mapping[str, Any], options: ExportOptions) -> bool:
    """Enough evidence: seen on ``min_machines`` machines and on ``min_days`` days."""
    return (
        _count(row.get("DistinctMachines")) >= options.min_machines
        and _count(row.get("DaysObserved")) >= options.min_days
    )


def build_rules(
    rows: Sequence[Mapping[str, Any]],
    window_end: dt.date,
    options: ExportOptions,
    window_start: dt.date | None = None,
) -> RuleSet:
    """Snapshot rows -> ``RuleSet``: rows below the thresholds left out (and counted).

    Rules come in ``(Directionality, AliasPath)`` order whatever the order of ``rows``.
    """
    ordered = sorted(rows, key=lambda r: (r["Directionality"] or "", r["AliasPath"] or ""))
    kept = [r for r in ordered if meets_thresholds(r, options)]
    rules = tuple(build_rule(r, options.include_remote_addresses) for r in kept)
    return RuleSet(window_start, window_end, options, rules, len(rows), len(rows) - len(kept))


# ---------------------------------------------------------------------------------------------
# Rendering (pure Python)
# ---------------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    """``text`` with control characters and line separators replaced by ``?``.

    A line break inside a commented-out rule would turn the rest of it into live code.
    """
    return "".join("?" if unicodedata.category(c) == "Cc" or c in _LINE_BREAKS else c for c in text)


def ps_quote(text: str) -> str:
    """A PowerShell single-quoted literal: no expansion of ``$`` or backticks inside.

    Every quote character (PowerShell also takes the typographic ones) is doubled, which
    PowerShell reads back as that one character.
    """
    body = "".join(c + c if c in PS_SINGLE_QUOTES else c for c in one_line(text))
    return f"'{body}'"


def describe(rule: RuleProposal, rules: RuleSet) -> str:
    start = rules.window_start.isoformat() if rules.window_start else "?"
    return (
        f"Draft by fwpolicy from firewall_policy [{start}, {rules.window_end.isoformat()}): "
        f"{rule.machines} machines, {rule.days} days, {rule.connections} connections"
    )


def powershell_command(rule: RuleProposal, rules: RuleSet) -> str:
    """One ``New-NetFirewallRule`` line; every value from the data is single-quoted."""
    direction = rule.direction if rule.direction in DIRECTIONS else ps_quote(rule.direction)
    parts = [
        "New-NetFirewallRule",
        f"-DisplayName {ps_quote(rule.name)}",
        f"-Direction {direction}",
        "-Action Allow",
        f"-Program {ps_quote(rule.program)}",
        f"-Protocol {rule.protocol}",
    ]
    if rule.ports:
        # Generated from integers: digits and '-' only, a list PowerShell binds to String[].
        flag = "-LocalPort" if rule.direction == INBOUND else "-RemotePort"
        parts.append(f"{flag} {','.join(rule.ports)}")
    if rule.remote_addresses:
        parts.append(f"-RemoteAddress {','.join(ps_quote(a) for a in rule.remote_addresses)}")
    parts.append(f"-Group {ps_quote(rules.group)}")
    parts.append(f"-Description {ps_quote(describe(rule, rules))}")
    return " ".join(parts)


def header_lines(rules: RuleSet) -> list[str]:
    o = rules.options
    start = rules.window_start.isoformat() if rules.window_start else "?"
    remote = (
        "restricted to the observed remote addresses, CIDR-collapsed"
        if o.include_remote_addresses
        else "not restricted"
    )
    return [
        f"window: [{start}, {rules.window_end.isoformat()})",
        f"thresholds: DistinctMachines >= {o.min_machines}, DaysObserved >= {o.min_days}",
        f"rows: {rules.rows_read} read, {rules.left_out} below the thresholds left out",
        f"rules: {len(rules.rules)}, {rules.to_review} flagged for review "
        f"({rules.not_windows} of them not Windows paths)",
        f"remote addresses: {remote}",
        "ports: local ports for Inbound rules, remote ports for Outbound rules",
    ]


def render_powershell(rules: RuleSet) -> str:
    lines = [
        "# fwpolicy: draft Windows Firewall allow rules from one firewall_policy snapshot",
        *(f"# {line}" for line in header_lines(rules)),
        "# Rules flagged for review are commented out: read their REVIEW lines, fix, uncomment.",
        "# Programs outside Windows (Linux, macOS) are listed as SKIPPED.",
        f"# Remove every rule of this draft: Remove-NetFirewallRule -Group {ps_quote(rules.group)}",
        "",
    ]
    for rule in rules.rules:
        if not rule.is_windows:
            lines.append(f"# SKIPPED ({NOT_WINDOWS}): {one_line(rule.direction)} {one_line(rule.alias_path)}")
            continue
        command = powershell_command(rule, rules)
        if rule.review:
            lines.extend(f"# REVIEW: {one_line(reason)}" for reason in rule.review)
            lines.append(f"# {command}")
        else:
            lines.append(command)
    text = "\n".join(lines) + "\n"
    # Windows PowerShell 5.1 reads a script without a byte-order mark in the ANSI code page,
    # which garbles non-ASCII paths; a BOM makes it read UTF-8. ASCII text needs none.
    return text if text.isascii() else "\ufeff" + text


def csv_safe(text: str) -> str:
    """Text a spreadsheet will not run as a formula (OWASP CSV injection guidance)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def render_csv(rules: RuleSet) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rules.rules:
        writer.writerow(
            [
                csv_safe(r.name),
                csv_safe(r.direction),
                csv_safe(r.program),
                r.protocol,
                ";".join(r.ports),
                ";".join(r.remote_addresses),
                r.machines,
                r.days,
                r.connections,
                ";".join(r.review),
                csv_safe(r.alias_path),
            ]
        )
    return out.getvalue()


def render_json(rules: RuleSet) -> str:
    o = rules.options
    document = {
        "metadata": {
            "generator": "fwpolicy export",
            "table": POLICY_TABLE,
            "window_start": rules.window_start.isoformat() if rules.window_start else None,
            "window_end": rules.window_end.isoformat(),
            "group": rules.group,
            "thresholds": {"min_machines": o.min_machines, "min_days": o.min_days},
            "include_remote_addresses": o.include_remote_addresses,
            "rows_read": rules.rows_read,
            "rows_left_out": rules.left_out,
            "rules": len(rules.rules),
            "rules_to_review": rules.to_review,
            "ports": "local ports for Inbound rules, remote ports for Outbound rules",
        },
        "rules": [r.to_dict() for r in rules.rules],
    }
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


# Intune (Microsoft Graph). Field names, JSON types and enum values are those of the Graph beta
# reference (microsoftgraph/microsoft-graph-docs-contrib, api-reference/beta/resources/):
# intune-deviceconfig-windowsfirewallrule.md: displayName, description, filePath (String),
#   protocol (Int32 0-255, "TCP = 6, UDP = 17"), localPortRanges, remotePortRanges,
#   remoteAddressRanges (String collections; a port or address list left unset means All/any),
#   profileTypes (windowsFirewallRuleNetworkProfileTypes: flags notConfigured, domain, private,
#   public), action (stateManagementSetting: notConfigured, blocked, allowed), trafficDirection
#   (windowsFirewallRuleTrafficDirectionType: notConfigured, out, in);
# intune-deviceconfig-windows10endpointprotectionconfiguration.md: firewallRules, a collection of
#   windowsFirewallRule of at most 150 elements.
GRAPH_RULE_TYPE = "#microsoft.graph.windowsFirewallRule"
GRAPH_PROFILE_TYPE = "#microsoft.graph.windows10EndpointProtectionConfiguration"
GRAPH_MAX_RULES = 150
GRAPH_PROTOCOLS = {"TCP": 6, "UDP": 17}
GRAPH_DIRECTIONS = {INBOUND: "in", OUTBOUND: "out"}
# New-NetFirewallRule without -Profile applies to every profile (Any); the same here, spelled out
# as all three flags rather than left to the service's default.
GRAPH_PROFILES = "domain,private,public"


def intune_problems(rule: RuleProposal) -> list[str]:
    """Why ``rule`` is left out of the Intune JSON: its review reasons, or what Graph cannot say.

    Every rule without review reasons has a known direction and, having ports, TCP or UDP; the
    last two checks only keep a rule from landing in neither the JSON nor the listing.
    """
    problems = list(rule.review)
    if not problems and rule.protocol not in GRAPH_PROTOCOLS:
        problems.append(f"protocol {rule.protocol}: a windowsFirewallRule with ports needs TCP or UDP")
    if not problems and rule.direction not in GRAPH_DIRECTIONS:
        problems.append(f"direction {rule.direction!r} is neither {INBOUND} nor {OUTBOUND}")
    return problems


def intune_rule(rule: RuleProposal, rules: RuleSet) -> dict[str, Any]:
    """One ``windowsFirewallRule``: an allow rule for one program, direction, protocol and ports.

    The program path is the one the PowerShell output gives ``-Program`` (machine-wide folders as
    ``%SystemRoot%``, ``%ProgramFiles%``...). Ports go to ``localPortRanges`` for inbound rules and
    ``remotePortRanges`` for outbound ones; the other list, and ``remoteAddressRanges`` when the
    addresses are not restricted, are left out, which Graph documents as All/any.
    """
    ports_field = "localPortRanges" if rule.direction == INBOUND else "remotePortRanges"
    body: dict[str, Any] = {
        "@odata.type": GRAPH_RULE_TYPE,
        "displayName": rule.name,
        "description": describe(rule, rules),
        "filePath": rule.program,
        "protocol": GRAPH_PROTOCOLS[rule.protocol],
        ports_field: list(rule.ports),
        "trafficDirection": GRAPH_DIRECTIONS[rule.direction],
        "action": "allowed",
        "profileTypes": GRAPH_PROFILES,
    }
    if rule.remote_addresses:
        body["remoteAddressRanges"] = list(rule.remote_addresses)
    return body


def split_intune(rules: RuleSet) -> tuple[list[RuleProposal], list[tuple[RuleProposal, list[str]]]]:
    """The rules that go into the Intune JSON, and the others with why they stay out."""
    ready: list[RuleProposal] = []
    left_out: list[tuple[RuleProposal, list[str]]] = []
    for rule in rules.rules:
        problems = intune_problems(rule)
        if problems:
            left_out.append((rule, problems))
        else:
            ready.append(rule)
    return ready, left_out


def render_intune(rules: RuleSet) -> str:
    """A Graph request body: a new endpoint-protection profile holding the ready rules.

    ``POST /deviceManagement/deviceConfigurations`` (beta) with this body creates the profile
    ``fwpolicy <window_end>``; rules flagged for review are not in it (``review_listing``).
    The text is ASCII (non-ASCII characters as ``\\uXXXX``), so no tool can misread its encoding.
    """
    ready, left_out = split_intune(rules)
    if len(ready) > GRAPH_MAX_RULES:
        log.warning(
            "%d Intune rules: Graph takes at most %d firewallRules per profile; split the JSON or "
            "raise --min-machines / --min-days",
            len(ready),
            GRAPH_MAX_RULES,
        )
    o = rules.options
    start = rules.window_start.isoformat() if rules.window_start else "?"
    document = {
        "@odata.type": GRAPH_PROFILE_TYPE,
        "displayName": rules.group,
        "description": (
            f"Draft by fwpolicy from {POLICY_TABLE} [{start}, {rules.window_end.isoformat()}): "
            f"allow rules for programs seen on at least {o.min_machines} machines and {o.min_days} days; "
            f"{len(ready)} rules, {len(left_out)} flagged for review left out"
        ),
        "firewallRules": [intune_rule(r, rules) for r in ready],
    }
    # Sorted keys put each "@odata.type" first, where OData readers look for it.
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


def review_listing(rules: RuleSet) -> str | None:
    """For formats that leave rules to review out (``intune``): those rules and why; else None."""
    if rules.options.fmt != "intune":
        return None
    ready, left_out = split_intune(rules)
    lines = [
        "# fwpolicy: rules left out of the Intune export; review, fix and add them by hand",
        *(f"# {line}" for line in header_lines(rules)),
        f"# in the Intune JSON: {len(ready)} rules; listed here: {len(left_out)}",
    ]
    if len(ready) > GRAPH_MAX_RULES:
        lines.append(
            f"# WARNING: Graph takes at most {GRAPH_MAX_RULES} firewallRules per profile: split the "
            "JSON or raise --min-machines / --min-days"
        )
    for rule, problems in left_out:
        ports = ", ".join(rule.ports) or "none recorded"
        addresses = ", ".join(rule.remote_addresses) or "any"
        lines += [
            "",
            f"{one_line(rule.direction)} {one_line(rule.alias_path)}",
            f"  program: {one_line(rule.program)}",
            f"  protocol: {rule.protocol}; ports: {ports}; remote addresses: {addresses}",
            f"  evidence: {rule.machines} machines, {rule.days} days, {rule.connections} connections",
            *(f"  REVIEW: {one_line(problem)}" for problem in problems),
        ]
    return "\n".join(lines) + "\n"


def review_path(target: str | Path) -> Path:
    """Where the review listing of ``--to TARGET`` goes: ``TARGET.review.txt``, beside it."""
    return Path(f"{target}.review.txt")


RENDERERS = {
    "powershell": render_powershell,
    "csv": render_csv,
    "json": render_json,
    "intune": render_intune,
}


def render(rules: RuleSet) -> str:
    """The rules in ``rules.options.fmt``."""
    return RENDERERS[rules.options.fmt](rules)


# ---------------------------------------------------------------------------------------------
# Reading the snapshot (Spark)
# ---------------------------------------------------------------------------------------------


def policy_path(output_root: str) -> str:
    return table_path(output_root, POLICY_TABLE)


def read_snapshot(
    spark: SparkSession, output_root: str, window_end: dt.date, include_remote_addresses: bool = False
) -> list[dict[str, Any]]:
    """The ``window_end`` partition of ``<output_root>/firewall_policy`` as a list of dicts.

    Raises ``ConfigError`` naming the path and date when the table or the partition is missing.
    """
    if not isinstance(window_end, dt.date):
        raise TypeError(f"window_end must be a date, got {type(window_end).__name__}")
    path = policy_path(output_root)
    if not is_delta_table(spark, path):
        raise ConfigError(f"no {POLICY_TABLE} Delta table at {path} (window_end {window_end})")
    columns = SNAPSHOT_COLUMNS + (REMOTE_COLUMNS if include_remote_addresses else ())
    snapshot = (
        spark.read.format("delta")
        .load(path)
        .where(F.col("window_end") == F.lit(window_end))  # a partition filter: one folder read
        .select(*columns)
        .orderBy("Directionality", "AliasPath")
    )
    # The policy is small (one row per program and direction, arrays capped at 128 values),
    # so collecting it to the driver is fine; RemoteIPs are only read when asked for.
    rows = [r.asDict() for r in snapshot.collect()]
    if not rows:
        windows = [
            r["window_end"].isoformat()
            for r in spark.read.format("delta")
            .load(path)
            .select("window_end")
            .distinct()
            .orderBy(F.desc("window_end"))
            .limit(10)
            .collect()  # at most 10 dates, for the error message
        ]
        raise ConfigError(
            f"{POLICY_TABLE} at {path} has no rows for window_end {window_end}; "
            f"latest windows: {', '.join(windows) or 'none'}"
        )
    return rows


def snapshot_rules(
    spark: SparkSession, output_root: str, window_end: dt.date, options: ExportOptions
) -> RuleSet:
    """Read the ``window_end`` snapshot under ``output_root`` and build its rules."""
    rows = read_snapshot(spark, output_root, window_end, options.include_remote_addresses)
    starts = sorted({r["window_start"] for r in rows if r.get("window_start") is not None})
    rules = build_rules(rows, window_end, options, starts[0] if starts else None)
    log.info(
        "export %s: %d rows, %d below thresholds, %d rules (%d to review)",
        options.fmt,
        rules.rows_read,
        rules.left_out,
        len(rules.rules),
        rules.to_review,
    )
    return rules


def export_policy(spark: SparkSession, output_root: str, window_end: dt.date, options: ExportOptions) -> str:
    """Read the ``window_end`` snapshot under ``output_root`` and render its rules as text."""
    return render(snapshot_rules(spark, output_root, window_end, options))
