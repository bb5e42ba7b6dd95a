"""Benign-traffic rules files: the shipped file, and bad files named by file, line and reason.

Pure Python, no Spark; the compiled predicates and excluded traffic are in
``integration/test_exclusions.py``.
"""

from __future__ import annotations

import pytest

from fwpolicy.config import ConfigError
from fwpolicy.review.exclusions import SCENARIOS, load_rules

from helpers import RULE_COLUMNS as COLUMNS
from helpers import SHIPPED_EXCLUSIONS as SHIPPED

# --------------------------------------------------------------------------- the shipped file


def test_shipped_file_holds_the_five_scenarios_as_tags():
    rs = load_rules(SHIPPED)
    assert len(rs.rules) == 5
    assert sorted(r.scenario for r in rs.rules) == sorted(SCENARIOS)
    assert {r.action for r in rs.rules} == {"tag"}  # applying it never changes the KQL rows
    assert all(r.description for r in rs.rules)
    assert rs.excluded_expr(COLUMNS) is None


def test_commented_exclude_example_loads_when_uncommented(tmp_path):
    text = SHIPPED.read_text()
    example = text[text.index("#   - name: backup-server") :]
    lines = [ln[2:] for ln in example.splitlines() if ln.startswith("#   ")]
    f = tmp_path / "x.yaml"
    f.write_text(text + "\n" + "\n".join(lines) + "\n")
    rs = load_rules(f)
    (rule,) = rs.exclude_rules
    assert rule.name == "backup-server" and rule.remote_ip_cidr == ("10.20.30.0/24", "2001:db8:20:30::/64")
    assert len(rs.tag_rules) == 5


# --------------------------------------------------------------------------- bad files

GOOD_RULE = "  - name: ok\n    action: tag\n    match:\n      file_name: [a.exe]\n"
BAD_FILES = [
    # (text, line of the mistake, reason)
    ("rules:\n  - name: r\n    action: tag\n    matches: {file_name: [a.exe]}\n", 4, "unknown key 'matches'"),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      filename: [a.exe]\n",
        5,
        "rule 'r': unknown key 'filename' in match",
    ),
    ("rules:\n  - name: r\n    action: drop\n    match: {file_name: [a.exe]}\n", 3, "bad action 'drop'"),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      remote_ip_cidr:\n        - 10.0.0.0/8\n"
        "        - 10.1.2.3/24\n",
        7,
        "bad CIDR '10.1.2.3/24'",
    ),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      remote_ip_cidr: [10.0.0.300/32]\n",
        5,
        "bad CIDR '10.0.0.300/32'",
    ),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      remote_ip_cidr: ['::ffff:10.0.0.0/104']\n",
        5,
        "IPv4-mapped",
    ),
    ("rules:\n  - name: r\n    action: exclude\n    match: {}\n", 4, "rule 'r': empty match"),
    (f"rules:\n{GOOD_RULE}{GOOD_RULE}", 6, "rule 'ok': duplicate name (first used on line 2)"),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      file_name: a.exe\n",
        5,
        "file_name must be a list of text",
    ),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      file_name: [a.exe, 42]\n",
        5,
        "each value of file_name must be text, got 42",
    ),
    ("rules:\n  - name: 7\n    action: tag\n    match: {file_name: [a.exe]}\n", 2, "name must be text"),
    ("rules:\n  - name: r\n    action: tag\n    match: [file_name, a.exe]\n", 4, "match must be a mapping"),
    ("rules:\n  - name: r\n    action: tag\n    match: {file_name: []}\n", 4, "empty list"),
    ("rules:\n  - name: r\n    action: tag\n", 2, "rule 'r': missing key 'match'"),
    (
        "rules:\n  - name: r\n    action: tag\n    action: exclude\n    match: {file_name: [a.exe]}\n",
        4,
        "duplicate key 'action'",
    ),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      file_name: ['C:\\Windows\\a.exe']\n",
        5,
        "is a path",
    ),
    (
        "rules:\n  - name: r\n    action: tag\n    match:\n      remote_url_suffix: [https://x.com/]\n",
        5,
        "not a domain name",
    ),
    ("rule:\n" + GOOD_RULE, 1, "unknown top-level key 'rule'"),
    ("rules:\n  - name: r\n    action: [tag\n", 4, "not valid YAML"),
    ("", 1, "empty file"),
]


@pytest.mark.parametrize(("text", "line", "reason"), BAD_FILES, ids=[b[2][:40] for b in BAD_FILES])
def test_bad_file_names_file_line_and_reason(tmp_path, text, line, reason):
    f = tmp_path / "exclusions.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_rules(f)
    message = str(e.value)
    assert message.startswith(f"{f}:{line}: "), message
    assert reason in message, message


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="exclusions file not found"):
        load_rules(tmp_path / "nope.yaml")


def test_values_are_normalised(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(
        "rules:\n  - name: r\n    action: tag\n    match:\n"
        "      remote_url_suffix: ['*.Dropbox.com', .example.org, x.com, x.com]\n"
        "      remote_ip_cidr: [10.0.0.1, '2001:DB8::/32']\n"
    )
    (rule,) = load_rules(f).rules
    assert rule.remote_url_suffix == ("dropbox.com", "example.org", "x.com")
    assert rule.remote_ip_cidr == ("10.0.0.1/32", "2001:db8::/32")
    assert rule.line == 2


def test_empty_rule_list_is_allowed(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("rules: []\n")
    rs = load_rules(f)
    assert rs.rules == () and rs.tags_expr(COLUMNS) is None and rs.excluded_expr(COLUMNS) is None
