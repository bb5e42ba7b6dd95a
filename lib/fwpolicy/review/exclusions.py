"""Benign-traffic rules: tag or exclude known-good traffic, and account for what was excluded.

A rule file (``conf/exclusions.yaml``) lists rules; each rule has a ``name``, an ``action``
(``tag`` or ``exclude``) and a ``match`` over the event's columns:

==========================  ==============================  =====================================
match key                   column                          a value matches when
==========================  ==============================  =====================================
``file_name``               InitiatingProcessFileName       equal, ignoring case
``command_line_contains``   InitiatingProcessCommandLine    contained, ignoring case
``remote_url_suffix``       RemoteUrl (its host)            host is the domain or a subdomain
``remote_ip_cidr``          RemoteIP                        address is in the network
==========================  ==============================  =====================================

Within ``match`` the keys are ANDed; the values of one key are ORed. A tag rule adds its name
to the connection's ``Tags``; the first exclude rule that matches (in file order) names the
connection's ``Excluded``, which keeps it out of ``firewall_policy`` and puts it in
``excluded_connections`` under that rule: nothing disappears silently.

Rules compile to Column expressions from ``pyspark.sql.functions`` only; a rule's values enter
them as literals (``F.lit`` / ``isin``), never as SQL text. Addresses are parsed in Spark:

* IPv4: a strict dotted quad (no leading zeros), or ``::ffff:`` + a dotted quad (IPv4-mapped,
  any case), becomes a long by ``split`` and arithmetic; ``(ip & mask) == network``.
* IPv6: the text is expanded (``::``, an embedded dotted quad, a ``%zone`` suffix) to its 128
  bits as a string of ``0``/``1``; a network matches when the bits start with its prefix.
  An IPv4-mapped address is an IPv4 address: IPv6 networks never match it, and an IPv6
  network inside ``::ffff:0:0/96`` is refused at load time (write it as IPv4).
* Text that is not an address (``''``, ``'-'``, ``'10.0.0.256'``, ``'010.0.0.1'``) matches no
  network.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import Column
from pyspark.sql import functions as F

from fwpolicy.config import ConfigError, stable_digest
from fwpolicy.query.kql import kql_contains
from fwpolicy.review.addresses import any_of, ipv4_long, ipv6_groups, let

log = logging.getLogger(__name__)

ACTIONS = ("tag", "exclude")
SCENARIOS = (
    "scheduled maintenance tasks",
    "antivirus and endpoint protection",
    "database backup",
    "software update deployment",
    "cloud sync",
)
RULE_KEYS = ("name", "description", "scenario", "action", "match")
REQUIRED_RULE_KEYS = ("name", "action", "match")
# match key -> the event column it reads
MATCH_COLUMNS = {
    "file_name": "InitiatingProcessFileName",
    "command_line_contains": "InitiatingProcessCommandLine",
    "remote_url_suffix": "RemoteUrl",
    "remote_ip_cidr": "RemoteIP",
}
EXCLUDED_GROUP = ("Excluded", "Directionality", "AliasPath")

_DOMAIN = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$")
_MAPPED_NETWORK = ipaddress.ip_network("::ffff:0:0/96")
_MAPPED_BITS = "0" * 80 + "1" * 16


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One benign-traffic rule, validated. ``line`` is where it starts in its file (1-based)."""

    name: str
    action: str
    file_name: tuple[str, ...] = ()
    command_line_contains: tuple[str, ...] = ()
    remote_url_suffix: tuple[str, ...] = ()
    remote_ip_cidr: tuple[str, ...] = ()
    description: str = ""
    scenario: str = ""
    line: int = 0

    def columns(self) -> tuple[str, ...]:
        """Event columns the rule reads."""
        return tuple(col for key, col in MATCH_COLUMNS.items() if getattr(self, key))

    def predicate(self) -> Column:
        """True when the event matches every key of ``match`` (one value of each)."""
        parts: list[Column] = []
        if self.file_name:
            names = sorted({v.lower() for v in self.file_name})
            parts.append(F.lower(F.col(MATCH_COLUMNS["file_name"])).isin(*names))
        if self.command_line_contains:
            column = MATCH_COLUMNS["command_line_contains"]
            parts.append(any_of(kql_contains(column, v) for v in self.command_line_contains))
        if self.remote_url_suffix:
            parts.append(url_suffix_match(F.col(MATCH_COLUMNS["remote_url_suffix"]), self.remote_url_suffix))
        if self.remote_ip_cidr:
            parts.append(cidr_match(F.col(MATCH_COLUMNS["remote_ip_cidr"]), self.remote_ip_cidr))
        out = parts[0]
        for p in parts[1:]:
            out = out & p
        return out


@dataclass(frozen=True)
class RuleSet:
    """The rules of one file, in file order."""

    rules: tuple[Rule, ...] = ()
    source: str = ""
    _warned: set = field(default_factory=set, compare=False, repr=False)

    @property
    def tag_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.action == "tag")

    @property
    def exclude_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.action == "exclude")

    def _usable(self, rules: Iterable[Rule], columns: Iterable[str]) -> list[Rule]:
        """Rules whose columns the source has; the others never match (warned once each)."""
        have = set(columns)
        usable = []
        for rule in rules:
            missing = [c for c in rule.columns() if c not in have]
            if not missing:
                usable.append(rule)
            elif rule.name not in self._warned:
                self._warned.add(rule.name)
                log.warning(
                    "%s:%d: rule %r needs column(s) %s, which the source lacks: it matches nothing",
                    self.source,
                    rule.line,
                    rule.name,
                    ", ".join(missing),
                )
        return usable

    def excluded_expr(self, columns: Iterable[str]) -> Column | None:
        """Name of the first exclude rule (file order) that matches, else null.

        ``None`` when the file has no exclude rule at all.
        """
        if not self.exclude_rules:
            return None
        usable = self._usable(self.exclude_rules, columns)
        if not usable:
            return F.lit(None).cast("string")
        out = F.when(usable[0].predicate(), F.lit(usable[0].name))
        for rule in usable[1:]:
            out = out.when(rule.predicate(), F.lit(rule.name))
        return out

    def tags_expr(self, columns: Iterable[str]) -> Column | None:
        """Names of the tag rules that match, in file order (``array<string>``, never null).

        ``None`` when the file has no tag rule at all.
        """
        if not self.tag_rules:
            return None
        usable = self._usable(self.tag_rules, columns)
        if not usable:
            return F.array().cast("array<string>")
        return F.array_compact(F.array(*(F.when(r.predicate(), F.lit(r.name)) for r in usable)))

    def expressions(self, columns: Iterable[str]) -> tuple[Column | None, Column | None]:
        """``(excluded, tags)`` for ``seed.where_clauses``."""
        cols = set(columns)
        return self.excluded_expr(cols), self.tags_expr(cols)

    def digest(self) -> str:
        """A short stable hash of the rules (not of their lines), to record with a run."""
        return stable_digest(
            [{k: v for k, v in dataclasses.asdict(r).items() if k != "line"} for r in self.rules]
        )


# --------------------------------------------------------------------------- expressions


def ipv6_bits(ip: Column) -> Column:
    """IPv6 address text as its 128 bits (a string of ``0``/``1``); null when not IPv6.

    Handles ``::``, an embedded dotted quad in the last 32 bits, upper case and a ``%zone``.
    """

    def bits(g: Column) -> Column:
        return F.when(
            g.isNotNull(), F.concat_ws("", F.transform(g, lambda x: F.lpad(F.conv(x, 16, 2), 16, "0")))
        )

    return let(ipv6_groups(F.regexp_replace(F.lower(ip), r"%[^%]+$", "")), bits)


def cidr_match(ip: Column, cidrs: Iterable[str]) -> Column:
    """True when the address is in one of the networks (IPv4 and IPv6); never true on non-addresses.

    IPv4: ``(ip & mask) == network``, both literals. IPv6: the bits start with the prefix.
    """
    nets = [ipaddress.ip_network(c, strict=True) for c in cidrs]
    v4 = [n for n in nets if n.version == 4]
    v6 = [n for n in nets if n.version == 6]
    preds: list[Column] = []
    if v4:
        preds.append(
            let(
                ipv4_long(ip),
                lambda v: any_of(
                    v.bitwiseAND(F.lit(int(n.netmask))) == F.lit(int(n.network_address)) for n in v4
                ),
            )
        )
    if v6:
        prefixes = [format(int(n.network_address), "0128b")[: n.prefixlen] for n in v6]
        preds.append(
            let(
                ipv6_bits(ip),
                lambda b: ~b.startswith(_MAPPED_BITS) & any_of(b.startswith(p) for p in prefixes),
            )
        )
    return any_of(preds)


def url_host(url: Column) -> Column:
    """Lower-case host of a RemoteUrl: scheme, user info, port, path and a trailing dot removed."""
    host = F.regexp_extract(F.lower(url), r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^/?#@]*@)?([^/?#:]*)", 1)
    return F.regexp_replace(host, r"\.$", "")


def url_suffix_match(url: Column, suffixes: Iterable[str]) -> Column:
    """True when the URL's host is one of the domains or a subdomain of one (ignoring case)."""
    suffixes = list(suffixes)
    return let(url_host(url), lambda h: any_of((h == F.lit(s)) | h.endswith("." + s) for s in suffixes))


# --------------------------------------------------------------------------- excluded traffic


# --------------------------------------------------------------------------- loading


class _Doc:
    """Walks a composed YAML node tree, with errors that name the file and the line."""

    def __init__(self, path: str, loader: yaml.SafeLoader) -> None:
        self.path = path
        self.loader = loader

    def error(self, node: yaml.Node | None, reason: str, rule: str | None = None) -> ConfigError:
        where = f"{self.path}:{node.start_mark.line + 1}" if node is not None else self.path
        who = f"rule {rule!r}: " if rule else ""
        return ConfigError(f"{where}: {who}{reason}")

    def mapping(self, node: yaml.Node, what: str, rule: str | None = None) -> dict[str, tuple]:
        """``{key: (key_node, value_node)}``; duplicate or non-string keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping (key: value), got {_kind(node)}", rule)
        out: dict[str, tuple] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                raise self.error(key_node, f"{what}: keys must be text, got {key!r}", rule)
            if key in out:
                first = out[key][0].start_mark.line + 1
                raise self.error(key_node, f"duplicate key {key!r} in {what} (first on line {first})", rule)
            out[key] = (key_node, value_node)
        return out

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _Unset
        return self.loader.construct_object(node, deep=True)

    def text(self, node: yaml.Node, what: str, rule: str | None = None) -> str:
        value = self.scalar(node)
        if not isinstance(value, str):
            shown = _kind(node) if value is _Unset else repr(value)
            raise self.error(node, f"{what} must be text, got {shown}", rule)
        return value

    def text_list(self, node: yaml.Node, what: str, rule: str) -> list[tuple[yaml.Node, str]]:
        if not isinstance(node, yaml.SequenceNode):
            shown = _kind(node) if not isinstance(node, yaml.ScalarNode) else repr(self.scalar(node))
            raise self.error(node, f"{what} must be a list of text, e.g. [a, b]; got {shown}", rule)
        if not node.value:
            raise self.error(node, f"{what} is an empty list: it would match nothing", rule)
        out = []
        for item in node.value:
            value = self.text(item, f"each value of {what}", rule)
            if not value.strip():
                raise self.error(item, f"{what} has an empty value", rule)
            out.append((item, value))
        return out


class _UnsetType:
    def __repr__(self) -> str:
        return "<unset>"


_Unset = _UnsetType()


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}.get(type(node), "a value")


def _check_value(doc: _Doc, key: str, node: yaml.Node, value: str, rule: str) -> str:
    """One value of a match key, validated and normalised (lower case for names and domains)."""
    if key == "file_name":
        if "\\" in value or "/" in value:
            raise doc.error(
                node, f"file_name {value!r} is a path; give the file name only (e.g. x.exe)", rule
            )
        return value
    if key == "command_line_contains":
        return value
    if key == "remote_url_suffix":
        domain = value.strip().lower()
        domain = domain[2:] if domain.startswith("*.") else domain.lstrip(".")
        domain = domain.rstrip(".")
        if not _DOMAIN.match(domain):
            raise doc.error(
                node,
                f"remote_url_suffix {value!r} is not a domain name (letters, digits, '-', '_' and dots; "
                "no scheme, port or path), e.g. onedrive.live.com",
                rule,
            )
        return domain
    # remote_ip_cidr
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as e:
        raise doc.error(node, f"bad CIDR {value!r}: {e}", rule) from None
    if net.version == 6 and net.subnet_of(_MAPPED_NETWORK):  # type: ignore[arg-type]
        raise doc.error(
            node,
            f"bad CIDR {value!r}: an IPv4-mapped IPv6 network; write it as an IPv4 CIDR "
            "(IPv4-mapped addresses are matched as IPv4)",
            rule,
        )
    return str(net)


def _rule(doc: _Doc, node: yaml.Node, index: int) -> Rule:
    fields = doc.mapping(node, f"rule #{index} of 'rules'")
    name = None
    if "name" in fields:
        name = doc.text(fields["name"][1], "name")
        if not name.strip():
            raise doc.error(fields["name"][1], "name is empty")
    for key, (key_node, _) in fields.items():
        if key not in RULE_KEYS:
            raise doc.error(key_node, f"unknown key {key!r} (expected one of {', '.join(RULE_KEYS)})", name)
    for key in REQUIRED_RULE_KEYS:
        if key not in fields:
            raise doc.error(node, f"missing key {key!r}", name if key != "name" else None)
    assert name is not None
    action = doc.scalar(fields["action"][1])
    if action not in ACTIONS:
        shown = _kind(fields["action"][1]) if action is _Unset else repr(action)
        raise doc.error(fields["action"][1], f"bad action {shown}: expected tag or exclude", name)
    texts = {k: doc.text(fields[k][1], k, name) for k in ("description", "scenario") if k in fields}
    scenario = texts.get("scenario", "")
    if scenario and scenario.strip().lower() not in SCENARIOS:
        log.debug("%s: rule %r has a scenario outside the five of the seed: %r", doc.path, name, scenario)
    match_node = fields["match"][1]
    match = doc.mapping(match_node, "match", name)
    if not match:
        raise doc.error(match_node, f"empty match: give at least one of {', '.join(MATCH_COLUMNS)}", name)
    values: dict[str, tuple[str, ...]] = {}
    for key, (key_node, value_node) in match.items():
        if key not in MATCH_COLUMNS:
            raise doc.error(
                key_node, f"unknown key {key!r} in match (expected one of {', '.join(MATCH_COLUMNS)})", name
            )
        checked = [_check_value(doc, key, n, v, name) for n, v in doc.text_list(value_node, key, name)]
        values[key] = tuple(dict.fromkeys(checked))  # de-duplicated, order kept
    return Rule(
        name=name,
        action=action,
        description=texts.get("description", ""),
        scenario=scenario,
        line=node.start_mark.line + 1,
        **values,
    )


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rule file; a mistake raises ``ConfigError`` naming file, line and reason."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"exclusions file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read: {e}") from e
    loader = yaml.SafeLoader(text)
    doc = _Doc(str(p), loader)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{line}: not valid YAML: {e.problem or e.context}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if root is None:
            raise ConfigError(f"{p}:1: empty file; expected a top-level 'rules:' list")
        top = doc.mapping(root, "the top level")
        for key, (key_node, _) in top.items():
            if key != "rules":
                raise doc.error(key_node, f"unknown top-level key {key!r} (expected 'rules')")
        if "rules" not in top:
            raise doc.error(root, "missing top-level key 'rules'")
        rules_node = top["rules"][1]
        if isinstance(rules_node, yaml.ScalarNode) and doc.scalar(rules_node) is None:
            return RuleSet((), str(p))  # `rules:` with nothing under it
        if not isinstance(rules_node, yaml.SequenceNode):
            raise doc.error(rules_node, f"'rules' must be a list of rules, got {_kind(rules_node)}")
        rules: list[Rule] = []
        seen: dict[str, Rule] = {}
        for i, node in enumerate(rules_node.value, start=1):
            rule = _rule(doc, node, i)
            if rule.name in seen:
                raise doc.error(
                    node, f"duplicate name (first used on line {seen[rule.name].line})", rule.name
                )
            seen[rule.name] = rule
            rules.append(rule)
    finally:
        loader.dispose()
    return RuleSet(tuple(rules), str(p))
