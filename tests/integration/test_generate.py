"""The simulated fleet: determinism, shape, the realistic traps, and the lake writer."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from fwpolicy.tasks import generate
from fwpolicy.tasks.generate import EVENT_SCHEMA, generate_events, write_lake

START = dt.date(2026, 8, 1)
ACTION_TYPES = {
    "ListeningConnectionCreated",
    "InboundConnectionAccepted",
    "ConnectionSuccess",
    "ConnectionFound",
    "ConnectionRequest",
    "ConnectionFailed",
}
REMOTE_IP_TYPES = {"Public", "Private", "Loopback", "LinkLocal", "", None}


def sorted_rows(df: DataFrame) -> list:
    """Collected rows in a total order that tolerates nulls."""
    return sorted(df.collect(), key=lambda r: tuple((v is None, str(v)) for v in r))


@pytest.fixture(scope="module")
def tiny(spark) -> DataFrame:
    return generate_events(spark, 20, 2, seed=7, start=START)


@pytest.fixture(scope="module")
def fleet(spark) -> list:
    """Rows of a fleet large enough to show every kind of noise: 500 devices x 2 days x 40."""
    return generate_events(spark, 500, 2, seed=7, start=START).collect()


# --- determinism ------------------------------------------------------------------------------


def test_same_arguments_give_identical_rows(spark, tiny):
    again = generate_events(spark, 20, 2, seed=7, start=START)
    assert sorted_rows(again) == sorted_rows(tiny)


def test_rows_do_not_depend_on_partitioning(spark, tiny, monkeypatch):
    monkeypatch.setattr(generate, "ROWS_PER_PARTITION", 97)
    many_parts = generate_events(spark, 20, 2, seed=7, start=START)
    assert many_parts.rdd.getNumPartitions() > 10
    assert sorted_rows(many_parts) == sorted_rows(tiny)


def test_a_longer_window_extends_the_same_days(spark, tiny):
    longer = generate_events(spark, 20, 3, seed=7, start=START)
    assert sorted_rows(longer.where(F.col("EventDate") < START + dt.timedelta(days=2))) == sorted_rows(tiny)


def test_another_seed_gives_other_rows(spark, tiny):
    other = generate_events(spark, 20, 2, seed=8, start=START)
    assert sorted_rows(other) != sorted_rows(tiny)
    ids = {r.DeviceId for r in tiny.select("DeviceId").distinct().collect()}
    assert not ids & {r.DeviceId for r in other.select("DeviceId").distinct().collect()}


# --- shape ------------------------------------------------------------------------------------


def test_schema_is_event_schema(tiny):
    assert tiny.schema == EVENT_SCHEMA


def test_row_count_is_devices_times_days_times_events(spark, tiny):
    assert tiny.count() == 20 * 2 * 40
    assert generate_events(spark, 3, 5, events_per_device_day=7).count() == 3 * 5 * 7


@pytest.mark.parametrize("bad", [{"devices": 0}, {"days": 0}, {"events_per_device_day": 0}])
def test_rejects_empty_fleets(spark, bad):
    args = {"devices": 2, "days": 1, "events_per_device_day": 1, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        generate_events(spark, **args)


def test_event_date_is_the_utc_date_of_timestamp_within_the_window(tiny):
    stats = tiny.agg(
        F.sum((F.col("EventDate") != F.to_date("Timestamp")).cast("int")).alias("mismatched"),
        F.min("EventDate").alias("first"),
        F.max("EventDate").alias("last"),
        F.min("Timestamp").alias("earliest"),
        F.max("Timestamp").alias("latest"),
        F.countDistinct(F.hour("Timestamp")).alias("hours"),
    ).first()
    assert stats.mismatched == 0
    assert (stats.first, stats.last) == (START, START + dt.timedelta(days=1))
    assert stats.earliest >= dt.datetime(2026, 8, 1)
    assert stats.latest < dt.datetime(2026, 8, 3)
    assert stats.hours == 24


def test_both_oses_and_every_action_type_appear(tiny):
    names = {r.DeviceName for r in tiny.select("DeviceName").distinct().collect()}
    assert sum(n.startswith("lnx-") for n in names) == 4  # one Linux device per five
    assert sum(n.startswith("desktop-") for n in names) == 16
    actions = {r.ActionType for r in tiny.select("ActionType").distinct().collect()}
    assert actions == ACTION_TYPES


def test_device_ids_are_sha1_of_seed_and_index(fleet):
    ids = {r.DeviceId for r in fleet}
    assert len(ids) == 500
    assert all(re.fullmatch(r"[0-9a-f]{40}", i) for i in ids)
    assert hashlib.sha1(b"7:0").hexdigest() in ids


# --- what the fleet must exercise --------------------------------------------------------------


def test_outbound_local_ports_follow_each_os_ephemeral_range(fleet):
    outbound = [r for r in fleet if r.ActionType.startswith("Connection")]
    windows = [r.LocalPort for r in outbound if r.DeviceName.startswith("desktop-")]
    linux = [r.LocalPort for r in outbound if r.DeviceName.startswith("lnx-")]
    assert windows and min(windows) >= 49152 and max(windows) <= 65535
    assert linux and min(linux) >= 32768 and max(linux) <= 60999
    assert any(p < 49152 for p in linux), "Linux ports below 49152 are the trap the query falls into"


def test_system_services_listen_and_accept_from_private_clients(fleet):
    svchost = r"C:\Windows\System32\svchost.exe"
    listening = {r.LocalPort for r in fleet if r.ActionType == "ListeningConnectionCreated"}
    assert {135, 445, 3389, 22} <= listening
    accepted = [
        r
        for r in fleet
        if r.ActionType == "InboundConnectionAccepted" and r.InitiatingProcessFolderPath == svchost
    ]
    assert accepted
    assert {r.LocalPort for r in accepted} == {135, 445, 3389}
    assert all(r.RemotePort >= 49152 for r in accepted)
    assert all(r.RemoteIP is None or re.match(r"(::ffff:)?10\.", r.RemoteIP) for r in accepted)
    sshd = {r.LocalPort for r in fleet if r.InitiatingProcessFolderPath == "/usr/sbin/sshd"}
    assert sshd == {22}


def test_servers_run_on_a_subset_of_devices(fleet):
    sql = [r for r in fleet if r.InitiatingProcessFileName == "sqlservr.exe"]
    nginx = [r for r in fleet if r.InitiatingProcessFolderPath == "/usr/sbin/nginx"]
    assert {r.LocalPort for r in sql} == {1433}
    assert {r.LocalPort for r in nginx} == {80, 443}
    assert 0 < len({r.DeviceId for r in sql}) < 100
    assert 0 < len({r.DeviceId for r in nginx}) < 100


def test_some_programs_exceed_the_makeset_cap_of_128(fleet):
    def distinct(path: str, field: str) -> int:
        return len(
            {
                getattr(r, field)
                for r in fleet
                if r.InitiatingProcessFolderPath == path and r.ActionType == "ConnectionSuccess"
            }
        )

    assert distinct(r"C:\Program Files\Google\Chrome\Application\chrome.exe", "RemoteIP") > 128
    assert distinct(r"C:\Windows\System32\svchost.exe", "RemotePort") > 128


def test_paths_carry_profiles_and_case_quirks(fleet):
    paths = {r.InitiatingProcessFolderPath for r in fleet}
    assert None in paths
    paths.discard(None)
    profiles = {m.group(1) for p in paths if (m := re.match(r"C:\\Users\\([^\\]+)\\", p))}
    assert any(len(u) == 1 for u in profiles), "one-letter user names are a quirk of the alias"
    assert any(u != u.lower() for u in profiles)
    assert any(p.lower().startswith("c:\\documents and settings\\") for p in paths)
    assert any(p.startswith("\\\\?\\C:\\Windows\\") for p in paths)
    assert any(p.startswith("C:\\WINDOWS\\system32\\") for p in paths)
    assert any(p.startswith(r"C:\ProgramData\Microsoft\Windows Defender\Platform") for p in paths)
    assert any(p.startswith(r"C:\Program Files (x86)\Microsoft\Edge") for p in paths)


def test_noise_rows_are_present(fleet):
    assert {r.RemoteIPType for r in fleet} == REMOTE_IP_TYPES
    loopback = [r for r in fleet if r.RemoteIPType == "Loopback"]
    assert loopback and {r.RemoteIP for r in loopback} <= {"127.0.0.1", "::1", None}
    assert any(r.RemoteIP and r.RemoteIP.startswith("169.254.") for r in fleet)
    assert any(r.RemoteIP and r.RemoteIP == r.LocalIP for r in fleet)
    assert any(r.RemoteIP is None for r in fleet)
    assert any(r.RemoteIP and r.RemoteIP.startswith("::ffff:10.") for r in fleet)
    assert {r.Protocol for r in fleet} == {"Tcp", "TcpV4", "Udp"}


def test_rare_programs_in_odd_folders_sit_on_very_few_devices(spark):
    rare = {
        r"C:\Users\Public\svc.exe",
        r"C:\$Recycle.Bin\x.exe",
        r"C:\ProgramData\upd.exe",
        "/tmp/.x/kworker",
    }
    rows = (
        generate_events(spark, 4000, 2, seed=7, start=START)
        .where(F.col("InitiatingProcessFolderPath").isin(*rare))
        .groupBy("InitiatingProcessFolderPath")
        .agg(F.countDistinct("DeviceId").alias("devices"), F.collect_set("RemotePort").alias("ports"))
        .collect()
    )
    assert {r.InitiatingProcessFolderPath for r in rows} == rare
    assert all(1 <= r.devices <= 30 for r in rows)
    assert any(4444 in r.ports for r in rows)


def method_sizes(spark, df: DataFrame) -> list[int]:
    """Bytecode size of the largest method of each whole-stage-codegen stage of ``df``."""
    compile_java = spark._jvm.org.apache.spark.sql.catalyst.expressions.codegen.CodeGenerator.compile
    sizes, pending = [], [df._jdf.queryExecution().executedPlan()]
    while pending:
        node = pending.pop()
        if node.getClass().getSimpleName() == "WholeStageCodegenExec":
            sizes.append(compile_java(node.doCodeGen()._2())._2().maxMethodCodeSize())
        children = node.children().iterator()
        while children.hasNext():
            pending.append(children.next())
    return sizes


def test_generated_code_stays_under_the_jit_method_limit(spark):
    """HotSpot does not compile methods over 8000 bytes of bytecode; such a stage runs interpreted."""
    sizes = method_sizes(spark, generate_events(spark, 10, 1))
    assert len(sizes) == 4, sizes
    assert max(sizes) < 8000, sizes


def test_a_callers_filter_is_not_pushed_into_the_generator(spark):
    filtered = generate_events(spark, 10, 1).where(
        (F.col("ActionType") == "ConnectionSuccess") & F.col("InitiatingProcessFolderPath").startswith("C:")
    )
    assert max(method_sizes(spark, filtered)) < 8000
    assert filtered.count() > 0


# --- write_lake ---------------------------------------------------------------------------------


def test_write_lake_parquet_round_trip(spark, tiny, tmp_path):
    out = tmp_path / "lake"
    write_lake(tiny, str(out))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "EventDate=2026-08-01",
        "EventDate=2026-08-02",
    ]
    back = spark.read.parquet(str(out))
    assert back.schema == EVENT_SCHEMA
    assert sorted_rows(back) == sorted_rows(tiny)
    write_lake(tiny.where(F.col("EventDate") == START), str(out))  # overwrite
    assert spark.read.parquet(str(out)).count() == 20 * 40


def test_write_lake_delta(spark, tmp_path):
    events = generate_events(spark, 5, 2, events_per_device_day=3)
    out = tmp_path / "delta"
    write_lake(events, str(out), "delta")
    assert (out / "_delta_log").is_dir()
    assert (out / "EventDate=2026-08-01").is_dir()
    assert sorted_rows(spark.read.format("delta").load(str(out))) == sorted_rows(events)


def test_write_lake_rejects_other_formats(tiny, tmp_path):
    with pytest.raises(ValueError, match="csv"):
        write_lake(tiny, str(tmp_path / "x"), "csv")
