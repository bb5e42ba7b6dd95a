"""``fwpolicy ingest``: Defender's streaming export (storage account, Event Hubs bodies as JSON
lines, or Event Hubs Capture's Avro files) -> bronze.

The fixture records (tests/fixtures/ingest) carry the shapes real exports show: seven fractional
digits, an IPv4-mapped IPv6 address, empty ``*IPType``, macOS and Linux paths, ``ReportId_long``
instead of ``ReportId``, a port as a JSON string, unknown extra properties, a record without any
``ReportId`` (content-hash key), one with an unparseable ``Timestamp``, and a record of another
table. The tests lay them out as each export does, with a malformed line added.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.cli import main
from fwpolicy.config import ConfigError
from fwpolicy.io.ingest import BRONZE_SCHEMA, IngestResult, classify_records, ingest
from fwpolicy.io.source import REQUIRED_COLUMNS, SourceError

from helpers import TESTS

FIXTURES = TESTS / "fixtures" / "ingest"
TENANT = "11111111-2222-3333-4444-555555555555"
NET_CONTAINER = "insights-logs-advancedhunting-devicenetworkevents"
PROC_CONTAINER = "insights-logs-advancedhunting-deviceprocessevents"
MALFORMED = 'this is not JSON {"records": ['
WRITTEN = 5  # records of devicenetworkevents.jsonl with a usable Timestamp


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text(encoding="utf-8").splitlines()


def hourly_blob(container: Path, record_line: str) -> Path:
    """``tenantId=<id>/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`` of the hour Defender received it."""
    t = dt.datetime.fromisoformat(json.loads(record_line)["time"][:19])
    return container / f"tenantId={TENANT}" / f"y={t:%Y}/m={t:%m}/d={t:%d}/h={t:%H}/m=00" / "PT1H.json"


def storage_layout(root: Path) -> Path:
    """A storage account: one container per table, JSON-lines blobs in hourly folders."""
    blobs: dict[Path, list[str]] = {}
    for line in fixture_lines("devicenetworkevents.jsonl"):
        blobs.setdefault(hourly_blob(root / NET_CONTAINER, line), []).append(line)
    for line in fixture_lines("deviceprocessevents.jsonl"):
        blobs.setdefault(hourly_blob(root / PROC_CONTAINER, line), []).append(line)
    first = min(blobs)
    blobs[first].insert(1, MALFORMED)
    for path, lines in blobs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def event_hubs_layout(root: Path) -> Path:
    """Event Hubs message bodies as JSON lines: two batches, one delivered twice, one empty."""
    net = [json.loads(x) for x in fixture_lines("devicenetworkevents.jsonl")]
    proc = [json.loads(x) for x in fixture_lines("deviceprocessevents.jsonl")]
    first, second = {"records": net[:3]}, {"records": net[3:] + proc}
    part = root / "fwpolicy-ns" / "defender" / "0" / "2023" / "01" / "05"
    part.mkdir(parents=True)
    (part / "09.json").write_text(
        "\n".join(json.dumps(b) for b in (first, second, {"records": []})) + "\n", encoding="utf-8"
    )
    # At-least-once delivery: the first batch again, in another file, and a truncated body.
    (part / "10.json").write_text(json.dumps(first) + "\n" + MALFORMED + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def bronze(spark, tmp_path_factory) -> tuple[IngestResult, str, Path]:
    root = tmp_path_factory.mktemp("ingest")
    source = storage_layout(root / "export")
    table = str(root / "bronze")
    return ingest(spark, str(source), table), table, source


def as_dicts(spark, table: str) -> dict[str, dict]:
    """Rows of the bronze table keyed by DeviceId, times as UTC text with microseconds."""
    fmt = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"
    df = spark.read.format("delta").load(table)
    df = df.withColumns({c: F.date_format(c, fmt) for c in ("Timestamp", "IngestTime")})
    return {f"{r['DeviceId']}/{r['ActionType']}": r.asDict() for r in df.collect()}


def test_storage_account_counts_every_line_and_record(bronze):
    result, table, _ = bronze
    assert result.table == table
    assert result.lines_read == 8  # 6 network records, 1 process record, 1 malformed line
    assert result.records_read == 7
    assert result.records_written == WRITTEN
    assert result.duplicates_skipped == 0
    assert result.skipped_by_category == {"AdvancedHunting-DeviceProcessEvents": 1}
    assert result.rejected_by_reason == {"malformed_line": 1, "unparseable_timestamp": 1}
    assert (result.first_date, result.last_date) == (dt.date(2023, 1, 4), dt.date(2023, 1, 5))
    text = result.describe()
    for needle in ("records written:     5", "AdvancedHunting-DeviceProcessEvents 1", "malformed_line 1"):
        assert needle in text


def test_bronze_schema_and_partitioning(spark, bronze):
    from delta.tables import DeltaTable

    _, table, _ = bronze
    df = spark.read.format("delta").load(table)
    # The folder names y=/m=/d=/h=/tenantId= do not leak in as columns.
    assert df.schema == BRONZE_SCHEMA
    assert set(REQUIRED_COLUMNS) <= set(df.columns)
    detail = DeltaTable.forPath(spark, table).detail().first()
    assert list(detail["partitionColumns"]) == ["EventDate"]
    assert sorted(p.name for p in Path(table).glob("EventDate=*")) == [
        "EventDate=2023-01-04",
        "EventDate=2023-01-05",
    ]


def test_bronze_values_keep_defender_shapes(spark, bronze):
    _, table, _ = bronze
    rows = as_dicts(spark, table)
    assert len(rows) == WRITTEN
    excel = rows["dev-win-1/ConnectionSuccess"]
    assert excel["Timestamp"] == "2023-01-04T14:05:32.314862"  # 7th digit truncated
    assert excel["IngestTime"] == "2023-01-04T14:07:32.621363"
    assert excel["EventDate"] == dt.date(2023, 1, 4)
    assert (excel["RemotePort"], excel["LocalPort"], excel["Protocol"]) == (443, 59985, "TcpV4")
    assert (excel["ReportId"], excel["InitiatingProcessId"]) == (101, 4242)
    assert excel["InitiatingProcessFolderPath"].endswith("\\office16\\excel.exe")
    assert excel["InitiatingProcessCommandLine"] == '"EXCEL.EXE"'
    assert excel["TenantId"] == TENANT
    assert excel["AdditionalFields"] is None
    assert len(excel["EventKey"]) == 64

    listening = rows["dev-win-1/ListeningConnectionCreated"]
    assert (listening["LocalIPType"], listening["RemoteIPType"]) == ("", "")  # empty stays empty
    inbound = rows["dev-win-1/InboundConnectionAccepted"]
    assert inbound["RemoteIP"] == "::ffff:192.168.1.162"
    assert json.loads(inbound["AdditionalFields"]) == {"direction": "In"}  # raw JSON text
    assert inbound["InitiatingProcessId"] is None  # absent property -> null

    mac = rows["dev-mac-1/ConnectionSuccess"]
    assert mac["ReportId"] == 104  # from ReportId_long
    assert mac["InitiatingProcessFolderPath"] == "/applications/safari.app/contents/macos/safari"
    # 23:59:59.9999999 stays on its day: truncated, not rounded into the next one.
    assert (mac["Timestamp"], mac["EventDate"]) == ("2023-01-04T23:59:59.999999", dt.date(2023, 1, 4))

    linux = rows["dev-lnx-1/ConnectionSuccess"]
    assert (linux["ReportId"], linux["DeviceName"], linux["RemotePort"]) == (None, None, 80)
    assert linux["EventDate"] == dt.date(2023, 1, 5)


def test_event_hubs_bodies_and_idempotent_reingest(spark, bronze, tmp_path, capsys):
    source = event_hubs_layout(tmp_path / "capture")
    table = str(tmp_path / "bronze")
    first = ingest(spark, str(source), table)
    assert first.lines_read == 5  # 3 batches, 1 redelivered batch, 1 truncated body
    assert first.records_read == 10
    assert first.records_written == WRITTEN
    assert first.duplicates_skipped == 3  # the redelivered batch, deduplicated within the run
    assert first.skipped_by_category == {"AdvancedHunting-DeviceProcessEvents": 1}
    assert first.rejected_by_reason == {"malformed_line": 1, "unparseable_timestamp": 1}
    accounted = (
        first.records_written
        + first.duplicates_skipped
        + sum(first.skipped_by_category.values())
        + first.rejected_by_reason["unparseable_timestamp"]
    )
    assert accounted == first.records_read

    # Again, through the command line: nothing new, everything accounted for as a duplicate.
    assert main(["-q", "ingest", "--source", str(source), "--output", table]) == 0
    report = capsys.readouterr().out
    assert "records written:     0" in report
    assert "duplicates skipped:  8" in report
    df = spark.read.format("delta").load(table)
    assert df.count() == WRITTEN
    # Keys do not depend on the layout: the storage-account export of the same events has the
    # same keys, so ingesting it into this table would add nothing either.
    _, storage_table, _ = bronze
    keys = {r["EventKey"] for r in df.select("EventKey").collect()}
    storage_df = spark.read.format("delta").load(storage_table)
    assert keys == {r["EventKey"] for r in storage_df.select("EventKey").collect()}
    assert len(keys) == WRITTEN


@pytest.mark.slow  # a run: the suite's time budget
def test_job_runs_over_the_bronze_table(spark, bronze, tmp_path):
    _, table, _ = bronze
    out = tmp_path / "out"
    args = ["-q", "run", "--source", table, "--source-format", "delta", "--output", str(out)]
    assert main([*args, "--start", "2023-01-04", "--end", "2023-01-06"]) == 0
    policy = spark.read.format("delta").load(str(out / "firewall_policy")).collect()
    by_direction: dict[str, list] = {}
    for r in policy:
        by_direction.setdefault(r["Directionality"], []).append(r)
    (inbound,) = by_direction["Inbound"]  # svchost: listening + accepted on 445, a server key
    assert "svchost.exe" in inbound["AliasPath"]
    assert (list(inbound["Ports"]), inbound["ConnectionCount"]) == ([445], 2)
    outbound = {r["AliasPath"]: list(r["Ports"]) for r in by_direction["Outbound"]}
    assert len(outbound) == 2  # excel and safari; apt's local port 40000 is below the range
    assert all(ports == [443] for ports in outbound.values())


def test_every_line_gets_a_fate(spark):
    """The rarer fates, on lines in memory (no files, no table)."""
    ok = json.loads(fixture_lines("devicenetworkevents.jsonl")[0])
    no_props = {k: v for k, v in ok.items() if k != "properties"}
    lines = [
        json.dumps({"records": [ok, "not a record", None]}),  # ok + 2 malformed records
        json.dumps({"records": []}),  # a line, no record
        "\ufeff" + json.dumps(ok),  # BOM of a blob's first line
        json.dumps({**ok, "category": ""}),
        json.dumps({**ok, "properties": "not an object"}),
        json.dumps(no_props),
        json.dumps({**ok, "category": "AdvancedHunting-DeviceEvents"}),
        "[1, 2]",  # JSON, but not an object
    ]
    df = spark.createDataFrame([(x,) for x in lines], "line string")
    rows = classify_records(df).select("_status", "_category", "_line_start").collect()
    assert sum(r["_line_start"] for r in rows) == len(lines)
    assert sorted(r["_status"] for r in rows) == sorted(
        [
            "ok",
            "malformed_record",
            "malformed_record",
            "empty_batch",
            "ok",
            "missing_category",
            "malformed_properties",
            "missing_timestamp",
            "other_category",
            "malformed_line",
        ]
    )
    assert {r["_category"] for r in rows if r["_status"] == "other_category"} == {
        "AdvancedHunting-DeviceEvents"
    }


def test_errors_name_the_problem(spark, bronze, tmp_path, capsys):
    _, table, source = bronze
    with pytest.raises(SourceError, match="source not found"):
        ingest(spark, str(tmp_path / "missing"), str(tmp_path / "t"))
    with pytest.raises(ConfigError, match="overlap"):
        ingest(spark, str(source), str(source / "bronze"))
    not_delta = tmp_path / "not-delta"
    not_delta.mkdir()
    (not_delta / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="not a Delta table"):
        ingest(spark, str(source), str(not_delta))
    assert main(["-q", "ingest", "--source", str(tmp_path / "missing"), "--output", table]) == 2
    assert "source not found" in capsys.readouterr().err


# ------------------------------------------------------------------- Event Hubs Capture (Avro)

# What Event Hubs Capture writes per message (its Avro schema, less nothing ingest needs).
CAPTURE_SCHEMA = T.StructType(
    [
        T.StructField("SequenceNumber", T.LongType(), False),
        T.StructField("Offset", T.StringType(), False),
        T.StructField("EnqueuedTimeUtc", T.StringType(), False),
        T.StructField("SystemProperties", T.MapType(T.StringType(), T.StringType()), False),
        T.StructField("Properties", T.MapType(T.StringType(), T.StringType()), False),
        T.StructField("Body", T.BinaryType(), True),
    ]
)


def write_capture_file(spark, bodies: list[str], target: Path) -> Path:
    """One Capture ``.avro`` file holding ``bodies`` as messages, written by Spark's Avro writer."""
    rows = [
        (i, str(i * 100), "1/5/2023 9:00:00 AM", {}, {"source": "defender"}, body.encode("utf-8"))
        for i, body in enumerate(bodies)
    ]
    scratch = target.parent / f".{target.name}.spark"
    spark.createDataFrame(rows, CAPTURE_SCHEMA).coalesce(1).write.format("avro").save(str(scratch))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(next(scratch.glob("part-*.avro")), target)
    shutil.rmtree(scratch)
    return target


def capture_layout(spark, json_root: Path, root: Path) -> Path:
    """The JSON-lines bodies of ``event_hubs_layout``, one Capture file per JSON file, in
    Capture's ``<namespace>/<hub>/<partition>/YYYY/MM/DD/HH/mm/ss.avro`` folders."""
    for path in sorted(json_root.rglob("*.json")):
        hour = path.stem
        target = root / "fwpolicy-ns" / "defender" / "0" / "2023" / "01" / "05" / hour / "00" / "00.avro"
        write_capture_file(spark, path.read_text(encoding="utf-8").splitlines(), target)
    return root


@pytest.fixture(scope="module")
def layouts(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("capture")
    json_root = event_hubs_layout(root / "json")
    return json_root, capture_layout(spark, json_root, root / "avro")


def counts(result):
    return (
        result.lines_read,
        result.records_read,
        result.records_written,
        result.duplicates_skipped,
        result.skipped_by_category,
        result.rejected_by_reason,
        result.first_date,
        result.last_date,
    )


def table_rows(spark, path):
    return sorted(spark.read.format("delta").load(path).drop("IngestTime").collect())


def test_capture_avro_gives_the_json_table_and_counts(spark, layouts, tmp_path):
    json_root, avro_root = layouts
    from_json = ingest(spark, str(json_root), str(tmp_path / "from_json"))
    from_avro = ingest(spark, str(avro_root), str(tmp_path / "from_avro"), "avro")
    assert counts(from_avro) == counts(from_json)
    assert from_avro.records_written == 5 and from_avro.corrupt_files == []
    assert table_rows(spark, str(tmp_path / "from_avro")) == table_rows(spark, str(tmp_path / "from_json"))


def test_a_corrupt_capture_file_is_left_out_named_and_the_rest_ingested(spark, layouts, tmp_path, capsys):
    json_root, avro_root = layouts
    source = tmp_path / "capture"
    shutil.copytree(avro_root, source)
    hour = source / "fwpolicy-ns" / "defender" / "0" / "2023" / "01" / "05"
    garbage = hour / "11" / "00" / "00.avro"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"Obj\x01 this is not an Avro container")
    truncated = hour / "12" / "00" / "00.avro"
    truncated.parent.mkdir(parents=True)
    whole = (hour / "09" / "00" / "00.avro").read_bytes()
    truncated.write_bytes(whole[: len(whole) - 40])  # the last block cut short

    table = tmp_path / "bronze"
    args = ["ingest", "--source", str(source), "--output", str(table), "--input-format", "avro"]
    assert main(args) == 0
    report = capsys.readouterr().out
    if int(spark.version.split(".")[0]) >= 4:
        assert "corrupt files:       2 left out" in report
        assert "11/00/00.avro" in report and "12/00/00.avro" in report
    else:  # Spark 3.5's Avro 1.11 reads a last block cut short as the end of the file
        assert "corrupt files:       1 left out" in report and "11/00/00.avro" in report
    expected = ingest(spark, str(json_root), str(tmp_path / "from_json"))
    assert f"records written:     {expected.records_written}" in report
    assert table_rows(spark, str(table)) == table_rows(spark, str(tmp_path / "from_json"))
