"""Profile ``normalized``: alias rules from ``conf/aliases.yaml`` and per-OS ephemeral ranges.

Spark is slow here, so every path of this file (rule examples, the issue's cases, the OS cases,
a user-added rule) goes through ONE DataFrame and one ``collect`` (the ``results`` fixture);
the tests then look their row up. Expected aliases below are written by hand from the rules'
documented meaning, not produced by running the code. Loading and validating rules files needs
no Spark: ``unit/test_alias_rules.py``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pyspark.sql import functions as F

from fwpolicy.config import ConfigError, PolicyConfig
from fwpolicy.query.aliasing import kql_alias
from fwpolicy.query.normalized import (
    compile_aliases,
    ephemeral_start_expr,
    load_alias_rules,
    normalize_path,
    normalized_alias,
    os_family_expr,
)
from fwpolicy.query.seed import firewall_policy

from helpers import DAY, NEXT_DAY, REPO, event, events_df, policy_dict

ALIASES = REPO / "conf" / "aliases.yaml"
# Names straight from the YAML, so each rule (a user's new one too) gets its own test ids.
RULE_NAMES = [r["name"] for r in yaml.safe_load(ALIASES.read_text(encoding="utf-8"))]

# (input, expected alias under normalized): the issue's cases, by rule, and the boundaries.
ISSUE_CASES = {
    # any drive letter
    "drive_c_other_folder": (r"C:\Tools\agent.exe", r"<drive>\tools\agent.exe"),
    "drive_e_other_folder": (r"e:\Games\Steam\steam.exe", r"<drive>\games\steam\steam.exe"),
    "drive_d_windows": (r"D:\Windows\System32\svchost.exe", r"%windir%\system32\svchost.exe"),
    "drive_d_programdata": (r"D:\ProgramData\Agent\agent.exe", r"%programdata%\agent\agent.exe"),
    "drive_relative_path_kept": (r"C:agent.exe", r"c:agent.exe"),
    # \\?\ and \Device\HarddiskVolumeN\ prefixes
    "long_path_windows": (r"\\?\C:\Windows\System32\svchost.exe", r"%windir%\system32\svchost.exe"),
    "long_path_profile": (r"\\?\D:\Users\bob\x.exe", r"%userprofile%\x.exe"),
    "device_namespace": (r"\\.\C:\Program Files\App\app.exe", r"%programfiles%\app\app.exe"),
    "nt_object_prefix": (r"\??\C:\Windows\System32\csrss.exe", r"%windir%\system32\csrss.exe"),
    "long_unc": (r"\\?\UNC\srv\share\x.exe", r"\\srv\share\x.exe"),
    "plain_unc_kept": (r"\\fileserver\share\x.exe", r"\\fileserver\share\x.exe"),
    "volume_windows": (
        r"\Device\HarddiskVolume3\Windows\System32\svchost.exe",
        r"%windir%\system32\svchost.exe",
    ),
    "volume_temp": (r"\Device\HarddiskVolume12\Users\al\AppData\Local\Temp\a.exe", r"%temp%\a.exe"),
    "volume_other_folder": (r"\Device\HarddiskVolume2\Tools\x.exe", r"<drive>\tools\x.exe"),
    "systemroot": (r"\SystemRoot\System32\smss.exe", r"%windir%\system32\smss.exe"),
    # user profiles on any drive, one-letter names included
    "profile_c": (
        r"C:\Users\bob\AppData\Local\Microsoft\Teams\current\Teams.exe",
        r"%userprofile%\appdata\local\microsoft\teams\current\teams.exe",
    ),
    "profile_d": (
        r"D:\Users\bob\AppData\Roaming\Zoom\bin\Zoom.exe",
        r"%userprofile%\appdata\roaming\zoom\bin\zoom.exe",
    ),
    "profile_one_letter": (r"C:\Users\j\Downloads\invoice.exe", r"%userprofile%\downloads\invoice.exe"),
    "profile_bare": (r"C:\Users\bob", r"%userprofile%"),
    "profile_bare_one_letter": (r"C:\Users\j", r"%userprofile%"),
    "profile_legacy": (
        r"D:\Documents and Settings\bob\Application Data\x.exe",
        r"%userprofile%\application data\x.exe",
    ),
    "profile_upper_case": (r"C:\USERS\BOB\DOWNLOADS\X.EXE", r"%userprofile%\downloads\x.exe"),
    "users_folder_without_a_name_kept": ("C:\\Users\\", "<drive>\\users\\"),
    "public_profile": (r"C:\Users\Public\svc.exe", r"%public%\svc.exe"),
    "public_prefix_is_a_user": (r"C:\Users\Publicist\x.exe", r"%userprofile%\x.exe"),
    # Program Files (x86)
    "program_files_x86": (r"D:\Program Files (x86)\Steam\steam.exe", r"%programfilesx86%\steam\steam.exe"),
    "program_files": (
        r"C:\Program Files\Microsoft Office\root\Office16\OUTLOOK.EXE",
        r"%programfiles%\microsoft office\root\office16\outlook.exe",
    ),
    "program_files_bare": (r"C:\Program Files", r"%programfiles%"),
    "program_filesystem_kept": (r"C:\Program Filesystem\x.exe", r"<drive>\program filesystem\x.exe"),
    # version folders and GUID folders
    "version_defender": (
        r"C:\ProgramData\Microsoft\Windows Defender\Platform\4.18.24090.11-0\MsMpEng.exe",
        r"%programdata%\microsoft\windows defender\platform\<version>\msmpeng.exe",
    ),
    "version_chrome": (
        r"C:\Program Files\Google\Chrome\Application\125.0.6422.142\elevation_service.exe",
        r"%programfiles%\google\chrome\application\<version>\elevation_service.exe",
    ),
    "version_three_numbers": (
        r"C:\Program Files\dotnet\shared\Microsoft.NETCore.App\8.0.1\x.exe",
        r"%programfiles%\dotnet\shared\microsoft.netcore.app\<version>\x.exe",
    ),
    "version_v_prefix": (r"C:\Tools\node\v18.17.1\node.exe", r"<drive>\tools\node\<version>\node.exe"),
    "two_numbers_kept": (
        r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
        r"%windir%\system32\windowspowershell\v1.0\powershell.exe",
    ),
    "tomcat_kept": (
        r"C:\Program Files\Apache Software Foundation\Tomcat 9.0\bin\tomcat9.exe",
        r"%programfiles%\apache software foundation\tomcat 9.0\bin\tomcat9.exe",
    ),
    "sql_instance_kept": (
        r"C:\Program Files\Microsoft SQL Server\MSSQL16.MSSQLSERVER\MSSQL\Binn\sqlservr.exe",
        r"%programfiles%\microsoft sql server\mssql16.mssqlserver\mssql\binn\sqlservr.exe",
    ),
    "version_in_file_name_kept": (r"C:\Tools\setup-1.2.3.exe", r"<drive>\tools\setup-1.2.3.exe"),
    "versioned_app_folder": (
        r"C:\Users\bob\AppData\Local\slack\app-4.41.97\slack.exe",
        r"%userprofile%\appdata\local\slack\app-<version>\slack.exe",
    ),
    "windowsapps_package": (
        r"C:\Program Files\WindowsApps\MSTeams_24152.412.2958.916_x64__8wekyb3d8bbwe\ms-teams.exe",
        r"%programfiles%\windowsapps\msteams_<version>_x64__8wekyb3d8bbwe\ms-teams.exe",
    ),
    "versioned_jdk": (
        r"C:\Program Files\Java\jdk-17.0.2\bin\java.exe",
        r"%programfiles%\java\jdk-<version>\bin\java.exe",
    ),
    "guid_braced": (
        r"C:\Program Files (x86)\Google\Update\Install\{8A69D345-D564-463C-AFF1-A69D9E530F96}\setup.exe",
        r"%programfilesx86%\google\update\install\<guid>\setup.exe",
    ),
    "guid_bare": (
        r"C:\Users\bob\AppData\Local\Temp\5F1D8B2C-1A2B-4C3D-8E9F-0A1B2C3D4E5F\DismHost.exe",
        r"%temp%\<guid>\dismhost.exe",
    ),
    "guid_in_file_name_kept": (
        r"C:\Windows\Temp\{8A69D345-D564-463C-AFF1-A69D9E530F96}.exe",
        r"%windir%\temp\{8a69d345-d564-463c-aff1-a69d9e530f96}.exe",
    ),
    # %temp%
    "temp_user": (r"C:\Users\bob\AppData\Local\Temp\x.exe", r"%temp%\x.exe"),
    "temp_one_letter_user": (r"E:\Users\j\AppData\Local\Temp\x.exe", r"%temp%\x.exe"),
    "temp_legacy": (r"C:\Documents and Settings\al\Local Settings\Temp\x.exe", r"%temp%\x.exe"),
    "temp_windows_is_windir": (r"C:\Windows\Temp\x.exe", r"%windir%\temp\x.exe"),
    "temporary_internet_files_kept": (
        r"C:\Users\bob\AppData\Local\Temporary Internet Files\x.exe",
        r"%userprofile%\appdata\local\temporary internet files\x.exe",
    ),
    # Linux and macOS home folders
    "linux_home": (r"/home/alice/bin/agent", r"~/bin/agent"),
    "linux_home_one_letter": (r"/home/a/x", r"~/x"),
    "linux_home_bare": (r"/home/alice", r"~"),
    "linux_home_upper_case": (r"/HOME/Bob/x", r"~/x"),
    "linux_root_kept": (r"/root/agent", r"/root/agent"),
    "linux_system_kept": (r"/usr/sbin/sshd", r"/usr/sbin/sshd"),
    "linux_version_folder": (r"/opt/app/1.2.3/bin/app", r"/opt/app/<version>/bin/app"),
    "macos_home": (r"/Users/bob/Library/Application Support/x", r"~/library/application support/x"),
    "macos_shared_kept": (r"/Users/Shared/x", r"/users/shared/x"),
    "macos_shared_prefix_is_a_user": (r"/Users/sharedfoo/x", r"~/x"),
    "macos_framework_version": (
        r"/Applications/Google Chrome.app/Contents/Frameworks/Google Chrome Framework.framework/Versions/125.0.6422.142/Helpers/chrome_crashpad_handler",
        r"/applications/google chrome.app/contents/frameworks/google chrome framework.framework/versions/<version>/helpers/chrome_crashpad_handler",
    ),
    # nothing to fold
    "empty": ("", ""),
    "null": (None, None),
}

# The kql profile's quirks stay as they are; normalized fixes them (hand-written, both sides).
KQL_QUIRKS = {
    "bare_profile": (r"C:\Users\bob", "%userprofile%b", "%userprofile%"),
    "one_letter_user": (
        r"C:\Users\j\Downloads\invoice.exe",
        r"%userprofile%\invoice.exe",
        r"%userprofile%\downloads\invoice.exe",
    ),
    "long_path_prefix": (r"\\?\C:\Windows\x.exe", r"%windir%dows\x.exe", r"%windir%\x.exe"),
    "profile_on_d": (r"D:\Users\bob\x.exe", r"d:\users\bob\x.exe", r"%userprofile%\x.exe"),
    "ordinary_windows": (
        r"C:\Windows\System32\svchost.exe",
        r"%windir%\system32\svchost.exe",
        r"%windir%\system32\svchost.exe",
    ),
    "ordinary_x86": (
        r"C:\Program Files (x86)\A\a.exe",
        r"%programfilesx86%\a\a.exe",
        r"%programfilesx86%\a\a.exe",
    ),
}

# (path, OS column value, family from the path, family with the OS column)
OS_CASES = {
    "linux_usr": ("/usr/bin/curl", None, "linux", "linux"),
    "linux_libexec": ("/usr/libexec/openssh/sftp-server", None, "linux", "linux"),
    "macos_applications": ("/Applications/Slack.app/Contents/MacOS/Slack", None, "macos", "macos"),
    "macos_system": (
        "/System/Library/PrivateFrameworks/ApplePushService.framework/apsd",
        None,
        "macos",
        "macos",
    ),
    "macos_library": ("/Library/Application Support/JAMF/bin/jamf", None, "macos", "macos"),
    "macos_users": ("/Users/bob/bin/tool", None, "macos", "macos"),
    "macos_private": ("/private/var/folders/zz/T/tool", None, "macos", "macos"),
    "macos_homebrew": ("/opt/homebrew/bin/node", None, "macos", "macos"),
    "macos_app_bundle": ("/opt/corp/Agent.app/Contents/MacOS/agent", None, "macos", "macos"),
    "windows_drive": (r"C:\Windows\System32\svchost.exe", None, "windows", "windows"),
    "windows_long_path": (r"\\?\C:\x.exe", None, "windows", "windows"),
    "windows_volume": (r"\Device\HarddiskVolume3\x.exe", None, "windows", "windows"),
    "empty_path": ("", None, "unknown", "unknown"),
    "null_path": (None, None, "unknown", "unknown"),
    "os_column_linux": ("", "Linux", "unknown", "linux"),
    "os_column_macos_wins": ("/usr/sbin/mDNSResponder", "macOS", "linux", "macos"),
    "os_column_windows_wins": ("/usr/bin/wine", "WindowsServer2022", "linux", "windows"),
    "os_column_unknown_falls_back": ("/usr/bin/curl", "iOS", "linux", "linux"),
    "os_column_empty_falls_back": ("/Applications/x", " ", "macos", "macos"),
}
# Ephemeral starts by family: defaults, and with every setting changed.
DEFAULT_STARTS = {"linux": 32768, "macos": 49152, "windows": 49152, "unknown": 49152}
CUSTOM_CFG = SimpleNamespace(ephemeral_start=50000, ephemeral_start_linux=40000, ephemeral_start_macos=49500)
CUSTOM_STARTS = {"linux": 40000, "macos": 49500, "windows": 50000, "unknown": 50000}

# A rule a user adds to a copy of the rules file, with no code change.
USER_RULE = r"""
- name: snap_revision
  description: A snap's revision folder changes with each refresh.
  pattern: '^/snap/([^/]+)/[0-9]+(?=/)'
  replacement: '/snap/$1/<revision>'
  example: {input: '/snap/firefox/4336/usr/lib/firefox/firefox', output: '/snap/firefox/<revision>/usr/lib/firefox/firefox'}
"""


def _without(name: str) -> str:
    return f"without__{name}"


@pytest.fixture(scope="module")
def user_rules_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("aliases") / "aliases.yaml"
    path.write_text(ALIASES.read_text(encoding="utf-8") + USER_RULE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def results(spark, user_rules_file):
    """Every path of this file through every expression under test: one DataFrame, one collect."""
    rules = load_alias_rules()
    inputs = [(r.example_input, None) for r in rules]
    inputs += [(path, None) for path, _ in ISSUE_CASES.values()]
    inputs += [(path, None) for path, _, _ in KQL_QUIRKS.values()]
    inputs += [(path, os_value) for path, os_value, _, _ in OS_CASES.values()]
    inputs += [("/snap/firefox/4336/usr/lib/firefox/firefox", None)]
    inputs = list(dict.fromkeys(inputs))
    df = spark.createDataFrame(inputs, "path string, os string")
    columns = {
        "normalized": normalized_alias("path"),
        "kql": kql_alias("path"),
        "user": normalized_alias("path", SimpleNamespace(aliases=str(user_rules_file))),
        "family": os_family_expr("path"),
        "family_os": os_family_expr("path", "os"),
        "start": ephemeral_start_expr("path", PolicyConfig(profile="normalized")),
        "start_os": ephemeral_start_expr("path", PolicyConfig(profile="normalized"), "os"),
        "start_custom": ephemeral_start_expr("path", CUSTOM_CFG, "os"),
    }
    for rule in rules:
        columns[_without(rule.name)] = compile_aliases(r for r in rules if r is not rule)("path")
    rows = df.select("path", "os", *[c.alias(n) for n, c in columns.items()]).collect()
    return {(r["path"], r["os"]): r.asDict() for r in rows}


# --- Each rule: its documented example, and the example really needs the rule ---------------


@pytest.mark.parametrize("name", RULE_NAMES)
def test_rule_example(results, name):
    rule = {r.name: r for r in load_alias_rules()}[name]
    assert results[(rule.example_input, None)]["normalized"] == rule.example_output


@pytest.mark.parametrize("name", RULE_NAMES)
def test_rule_example_needs_the_rule(results, name):
    rule = {r.name: r for r in load_alias_rules()}[name]
    assert results[(rule.example_input, None)][_without(name)] != rule.example_output


# --- The issue's cases, hand-written ------------------------------------------------------


@pytest.mark.parametrize(("path", "expected"), ISSUE_CASES.values(), ids=ISSUE_CASES.keys())
def test_normalized_alias(results, path, expected):
    assert results[(path, None)]["normalized"] == expected


@pytest.mark.parametrize(("path", "kql", "normalized"), KQL_QUIRKS.values(), ids=KQL_QUIRKS.keys())
def test_kql_profile_keeps_its_quirks_and_normalized_fixes_them(results, path, kql, normalized):
    assert (results[(path, None)]["kql"], results[(path, None)]["normalized"]) == (kql, normalized)


def test_spark_and_python_agree_on_every_path(results):
    rules = load_alias_rules()
    mismatches = {
        path: (row["normalized"], normalize_path(path, rules))
        for (path, _), row in results.items()
        if path is not None and row["normalized"] != normalize_path(path, rules)
    }
    assert mismatches == {}


def test_a_user_rule_needs_no_code(results, user_rules_file):
    row = results[("/snap/firefox/4336/usr/lib/firefox/firefox", None)]
    assert row["user"] == "/snap/firefox/<revision>/usr/lib/firefox/firefox"
    assert row["normalized"] == "/snap/firefox/4336/usr/lib/firefox/firefox"  # default rules: unchanged
    assert [r.name for r in load_alias_rules(user_rules_file)][-1] == "snap_revision"
    # the user's file keeps every default rule working
    assert (
        results[(r"C:\Users\j\Downloads\invoice.exe", None)]["user"] == r"%userprofile%\downloads\invoice.exe"
    )


# --- Operating system and ephemeral range -------------------------------------------------


@pytest.mark.parametrize(("path", "os_value", "from_path", "with_os"), OS_CASES.values(), ids=OS_CASES.keys())
def test_os_family_and_ephemeral_start(results, path, os_value, from_path, with_os):
    row = results[(path, os_value)]
    assert (row["family"], row["family_os"]) == (from_path, with_os)
    assert (row["start"], row["start_os"]) == (DEFAULT_STARTS[from_path], DEFAULT_STARTS[with_os])
    assert row["start_custom"] == CUSTOM_STARTS[with_os]


def test_linux_starts_at_32768_and_windows_at_49152(results):
    assert results[("/usr/bin/curl", None)]["start"] == 32768
    assert results[(r"C:\Windows\System32\svchost.exe", None)]["start"] == 49152


@pytest.mark.parametrize("value", [0, 65537, "32768", True, None])
def test_ephemeral_settings_are_checked(spark, value):  # F.lit needs a SparkContext
    with pytest.raises(ConfigError, match="ephemeral_start_linux must be an integer"):
        ephemeral_start_expr("p", SimpleNamespace(ephemeral_start=49152, ephemeral_start_linux=value))


PIPELINE_ROWS = [
    event(DeviceId="lx-1", LocalPort=40000, InitiatingProcessFolderPath="/usr/bin/curl"),
    event(DeviceId="lx-2", LocalPort=45000, InitiatingProcessFolderPath="/home/alice/bin/agent"),
    event(
        DeviceId="lx-1",
        ActionType="InboundConnectionAccepted",
        LocalPort=22,
        RemoteIP="20.9.9.9",
        RemotePort=51515,
        InitiatingProcessFolderPath="/usr/sbin/sshd",
    ),
    # Windows and macOS keep 49152: a client port of 40000 is in neither leg.
    event(DeviceId="win-1", LocalPort=40000, InitiatingProcessFolderPath=r"C:\Program Files\App\app.exe"),
    event(
        DeviceId="mac-1",
        LocalPort=40000,
        InitiatingProcessFolderPath="/Applications/App.app/Contents/MacOS/App",
    ),
    event(
        DeviceId="win-2", LocalPort=50000, InitiatingProcessFolderPath=r"\\?\C:\Windows\System32\svchost.exe"
    ),
]


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (
            "kql",
            {("Inbound", "/usr/sbin/sshd"): [22], ("Outbound", r"%windir%dows\system32\svchost.exe"): [443]},
        ),
        (
            "normalized",
            {
                ("Inbound", "/usr/sbin/sshd"): [22],
                ("Outbound", "/usr/bin/curl"): [443],
                ("Outbound", "~/bin/agent"): [443],
                ("Outbound", r"%windir%\system32\svchost.exe"): [443],
            },
        ),
    ],
)
def test_linux_client_ports_count_as_outbound_only_under_normalized(spark, spark_conf, profile, expected):
    # Whole-stage codegen of the policy plan costs more than running it on six rows (about a
    # third of this test's time); the results do not depend on it.
    spark_conf("spark.sql.codegen.wholeStage", "false")
    policy = policy_dict(
        firewall_policy(events_df(spark, PIPELINE_ROWS), PolicyConfig(profile=profile), DAY, NEXT_DAY)
    )
    assert {key: row["Ports"] for key, row in policy.items()} == expected


def test_alias_column_is_a_jvm_expression(spark):  # F.col needs a SparkContext
    # regexp_replace over literals, no Python UDF in the plan.
    text = str(normalized_alias(F.col("p")))
    assert "regexp_replace" in text
    assert "udf" not in text.lower()
