"""Profile ``normalized``: loading and validating the alias rules files, pure Python, no Spark.

The rules as Spark expressions, on paths, are in ``integration/test_normalized.py``.
"""

from __future__ import annotations

import os
import re
from types import SimpleNamespace

import pytest
import yaml

from fwpolicy.config import ConfigError, PolicyConfig
from fwpolicy.query.normalized import (
    AliasRule,
    AliasRulesError,
    explain,
    load_alias_rules,
    parse_alias_rules,
    portability_problem,
    rules_path,
)

from helpers import REPO

ALIASES = REPO / "conf" / "aliases.yaml"


def _rule(**over) -> dict:
    rule = {
        "name": "r",
        "description": "d",
        "pattern": "^/a",
        "replacement": "/b",
        "example": {"input": "/a/x", "output": "/b/x"},
    }
    rule.update(over)
    return {k: v for k, v in rule.items() if v is not _DROP}


_DROP = object()

BAD_RULES = {
    "not_a_list": ({"name": "r"}, "expected a non-empty list of rules"),
    "empty": ([], "expected a non-empty list of rules"),
    "rule_not_mapping": (["just a string"], "rule 1: expected a mapping"),
    "missing_key": ([_rule(replacement=_DROP)], "rule 1 ('r'): missing key(s) replacement"),
    "unknown_key": ([_rule(replacment="/b")], "rule 1 ('r'): unknown key(s) ['replacment']"),
    "non_string_pattern": ([_rule(pattern=12)], "rule 1 ('r'): pattern must be a string, got int 12"),
    "non_string_name": ([_rule(name=["r"])], "rule 1: name must be a string"),
    "bad_name": ([_rule(name="Bad-Name")], "name must be lower_snake_case"),
    "example_not_mapping": ([_rule(example="/a/x")], "example must be a mapping"),
    "example_extra_key": (
        [_rule(example={"input": "/a", "output": "/b", "x": "y"})],
        "example must be a mapping",
    ),
    "example_non_string": (
        [_rule(example={"input": "/a/x", "output": 3})],
        "example output must be a string",
    ),
    "empty_pattern": ([_rule(pattern="")], "pattern is empty"),
    "invalid_regex": ([_rule(pattern="^(/a")], "invalid regular expression '^(/a'"),
    "unicode_digit_class": ([_rule(pattern=r"^/a\d")], r"not portable between Java and Python: \d"),
    "python_named_group": ([_rule(pattern="^(?P<x>/a)")], "named groups (?P<..>) are Python-only"),
    "literal_brace": ([_rule(pattern="^/a{x}")], "escape it as \\{"),
    "possessive": ([_rule(pattern="^/a++")], "possessive quantifiers"),
    "class_intersection": ([_rule(pattern="^/[a&&b]")], "intersection in Java"),
    "absolute_end": ([_rule(pattern=r"^/a\Z")], "anchors differ"),
    "missing_group": ([_rule(replacement="/$2")], "replacement refers to $2 but the pattern has 0 group(s)"),
    "duplicate_name": (
        [_rule(), _rule(pattern="^/b", example={"input": "/b/x", "output": "/b/x"})],
        "rule 2 ('r'): duplicate name (also rule 1)",
    ),
    "wrong_example": (
        [_rule(example={"input": "/a/x", "output": "/c/x"})],
        "example '/a/x' gives '/b/x', not '/c/x' (rules applied: r)",
    ),
    "example_not_exercised": (
        [_rule(example={"input": "/z", "output": "/z"})],
        "does not exercise this rule",
    ),
    "error_names_the_second_rule": (
        [_rule(), _rule(name="s", pattern=7)],
        "rule 2 ('s'): pattern must be a string",
    ),
}


@pytest.mark.parametrize(("rules", "message"), BAD_RULES.values(), ids=BAD_RULES.keys())
def test_bad_rules_are_reported_with_file_rule_and_reason(rules, message):
    with pytest.raises(AliasRulesError) as e:
        parse_alias_rules(yaml.safe_dump(rules), "my-aliases.yaml")
    assert str(e.value).startswith("my-aliases.yaml: ")
    assert message in str(e.value)


def test_invalid_yaml_is_reported():
    with pytest.raises(AliasRulesError, match=re.escape("my.yaml: not valid YAML")):
        parse_alias_rules("- [unclosed", "my.yaml")


def test_rule_errors_are_config_errors(tmp_path):
    # The CLI reports ConfigError as a one-line error; a rules file goes through the same path.
    path = tmp_path / "aliases.yaml"
    path.write_text(yaml.safe_dump([_rule(pattern="(")]))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: rule 1 ('r'): invalid regular expression")):
        load_alias_rules(path)
    with pytest.raises(ConfigError, match="alias rules file not found"):
        load_alias_rules(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "pattern",
    [
        r"^<drive>\\users\\[^\\]+",
        r"(?<=[\\/])v?[0-9]+(?:\.[0-9]+){2,}(?=[\\/])",
        r"\{[0-9a-f]{8}\}",
        r"^\\\\[?.]\\",
    ],
)
def test_portable_patterns_pass(pattern):
    assert portability_problem(pattern) is None


def test_replacement_is_literal_text_with_group_references():
    rule = AliasRule("r", "d", "^(a)", r"\$x$1", "a", r"\$xa")
    assert rule.java_replacement == r"\\\$x$1"  # Java: backslash and dollar escaped
    assert rule.python_replacement == r"\\$x\g<1>"
    assert rule.apply("ab") == r"\$xab"


def test_rules_are_cached_per_file_and_reread_when_edited(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text(yaml.safe_dump([_rule()]))
    first = load_alias_rules(path)
    assert load_alias_rules(str(path)) is first
    path.write_text(yaml.safe_dump([_rule(name="renamed")]))
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # a different mtime, whatever the clock
    assert [r.name for r in load_alias_rules(path)] == ["renamed"]


def test_rules_path_prefers_the_configured_file(tmp_path):
    assert rules_path(SimpleNamespace(aliases=str(tmp_path / "a.yaml"))) == tmp_path / "a.yaml"
    assert rules_path(PolicyConfig()) == ALIASES
    assert rules_path() == ALIASES


def test_explain_names_each_rule_that_fired():
    steps = explain(r"\\?\D:\Users\j\AppData\Local\Temp\x.exe")
    assert [name for name, _, _ in steps] == ["long_path_prefix", "drive_letter", "user_profile", "user_temp"]
    assert steps[-1][2] == r"%temp%\x.exe"
