"""Ingest Defender's streaming-API export into a typed Delta bronze table.

Why: advanced hunting keeps ``DeviceNetworkEvents`` for 30 days, while a firewall policy wants
months of them. Long retention comes from Defender's streaming API, which forwards every event,
as JSON, to an Azure Storage account or to Event Hubs. ``ingest`` turns that export into the
*bronze* table the job reads (``fwpolicy run --source-format delta``): Defender's column names and
types, one row per event, partitioned by ``EventDate`` (the UTC date of ``Timestamp``), appended
to idempotently so the same files can be ingested again without duplicates.

Input (read recursively under the source path; Spark decompresses ``.gz`` files by name):

- **Storage account**: the container ``insights-logs-advancedhunting-devicenetworkevents`` with
  blobs ``tenantId=<id>/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json``, each JSON lines of records. The
  ``y=``/``m=`` folders look like Hive partitions but are not read as columns.
- **Event Hubs**: JSON-lines files whose lines are message bodies ``{"records": [record, ...]}``.
- **Event Hubs Capture** (``input_format="avro"``): the ``.avro`` files Capture writes
  (``<namespace>/<hub>/<partition>/YYYY/MM/DD/HH/mm/ss.avro``), read with Spark's Avro source.
  Each Avro record's ``Body`` (bytes) holds one message body, which is then read exactly as a
  JSON line is: the same table and the same counts (``lines_read`` counts the bodies). A corrupt
  ``.avro`` file does not stop the ingest: it is left out whole, named in ``corrupt_files``,
  and the other files are ingested.

Both shapes may be mixed: each line is classified on its own (a top-level ``records`` array makes
it a batch; any other JSON object is one record). A record is
``{"time", "tenantId", "operationName", "category", "properties": {...}}``:

- ``properties.Timestamp`` (when the event happened) becomes ``Timestamp``; ``time`` (when Defender
  received it) becomes ``IngestTime``; ``tenantId`` becomes ``TenantId``. Times carry seven
  fractional digits; Spark keeps six, and the seventh is truncated (never rounded into the next
  second or day, never turned into null).
- ``properties`` may hold columns that are not kept, and may lack some: those become null. Text
  values are kept as they are (``''`` stays ``''``; ``::ffff:`` addresses and macOS/Linux paths are
  not rewritten). ``ReportId_long`` fills ``ReportId`` when ``ReportId`` is absent.
  ``AdditionalFields`` is kept as raw JSON text.

Nothing is dropped silently. Blank lines carry nothing and are not counted; every other line is
in ``lines_read``; a line that is not a JSON object is rejected as ``malformed_line``. Each record
is in ``records_read`` and ends in exactly one of: written; ``duplicates_skipped`` (already in the
table, or repeated in this batch, as the at-least-once delivery of Event Hubs allows);
``skipped_by_category`` (another advanced-hunting table, e.g. ``AdvancedHunting-DeviceProcessEvents``);
``rejected_by_reason`` (``malformed_record``, ``missing_category``, ``malformed_properties``,
``missing_timestamp``, ``unparseable_timestamp``).

Idempotence: every event gets an ``EventKey``, the SHA-256 of Defender's own key
``(DeviceId, ReportId, Timestamp)`` when ``ReportId`` is known, otherwise of the canonical JSON of
its typed columns (``IngestTime`` left out, so a redelivered event keeps its key). The batch is
deduplicated on it and MERGEd into the table (insert when not matched), with the condition on
``EventDate`` too so Delta prunes the partitions outside the batch's dates. The raw files are
scanned once: the parsed records are persisted, the counts are one small aggregate of them, and
the merge reads the same persisted rows. No Python UDFs: parsing is ``from_json`` throughout.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlparse

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.config import ConfigError
from fwpolicy.io.sink import empty_frame
from fwpolicy.io.source import SourceError
from fwpolicy.io.storage import list_names, overlaps, path_exists

log = logging.getLogger(__name__)

CATEGORY = "AdvancedHunting-DeviceNetworkEvents"
PARTITION_COLUMN = "EventDate"
KEY_COLUMN = "EventKey"
CORRUPT = "_corrupt_record"

# Typed columns of DeviceNetworkEvents kept from ``properties``, in table order.
PROPERTY_COLUMNS: tuple[tuple[str, T.DataType], ...] = (
    ("Timestamp", T.TimestampType()),
    ("DeviceId", T.StringType()),
    ("DeviceName", T.StringType()),
    ("ActionType", T.StringType()),
    ("RemoteIP", T.StringType()),
    ("RemotePort", T.IntegerType()),
    ("RemoteUrl", T.StringType()),
    ("LocalIP", T.StringType()),
    ("LocalPort", T.IntegerType()),
    ("Protocol", T.StringType()),
    ("LocalIPType", T.StringType()),
    ("RemoteIPType", T.StringType()),
    ("InitiatingProcessFileName", T.StringType()),
    ("InitiatingProcessFolderPath", T.StringType()),
    ("InitiatingProcessCommandLine", T.StringType()),
    ("InitiatingProcessAccountName", T.StringType()),
    ("InitiatingProcessId", T.LongType()),
    ("ReportId", T.LongType()),
    ("AdditionalFields", T.StringType()),
    ("MachineGroup", T.StringType()),
)
# Columns ingest adds: who sent it, when Defender received it, the dedupe key, the partition.
ADDED_COLUMNS: tuple[tuple[str, T.DataType], ...] = (
    ("TenantId", T.StringType()),
    ("IngestTime", T.TimestampType()),
    (KEY_COLUMN, T.StringType()),
    (PARTITION_COLUMN, T.DateType()),
)
BRONZE_SCHEMA = T.StructType([T.StructField(n, t, True) for n, t in (*PROPERTY_COLUMNS, *ADDED_COLUMNS)])

# Every JSON leaf is read as text (numbers keep their digits, objects their raw JSON) and typed
# afterwards with try_cast, so an odd value nulls one cell instead of failing the whole line.
_S = T.StringType()
_RECORD_FIELDS = ("time", "tenantId", "operationName", "category", "properties")
RECORD_SCHEMA = T.StructType([T.StructField(n, _S) for n in (*_RECORD_FIELDS, CORRUPT)])
LINE_SCHEMA = T.StructType([T.StructField("records", T.ArrayType(_S)), *RECORD_SCHEMA.fields])
PROPERTIES_SCHEMA = T.StructType(
    [T.StructField(n, _S) for n, _ in PROPERTY_COLUMNS]
    + [T.StructField("ReportId_long", _S), T.StructField(CORRUPT, _S)]
)
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}

INPUT_FORMATS = ("json", "avro")
# The one field of an Event Hubs Capture record that ingest reads: the message body. Given as
# the read schema, so listing the files reads none of them.
CAPTURE_SCHEMA = T.StructType([T.StructField("Body", T.BinaryType())])

OK = "ok"
EMPTY_BATCH = "empty_batch"  # a {"records": []} line: counted as a line, holds no record
OTHER_CATEGORY = "other_category"
LINE_REASONS = ("malformed_line",)  # rejected lines: they hold no record


@dataclass(frozen=True)
class IngestResult:
    """What one ingest read and wrote; every record read is accounted for in exactly one count."""

    table: str
    lines_read: int
    records_read: int
    records_written: int
    duplicates_skipped: int
    skipped_by_category: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    first_date: dt.date | None = None  # EventDate range of the accepted records
    last_date: dt.date | None = None
    corrupt_files: list[str] = field(default_factory=list)  # left out whole (Avro input)

    def _corrupt(self) -> str:
        return f"{len(self.corrupt_files)} left out ({', '.join(self.corrupt_files)})"

    def describe(self) -> str:
        """A short human summary, one figure a line."""

        def counts(d: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"

        dates = f"{self.first_date} .. {self.last_date}" if self.first_date else "none"
        return "\n".join(
            [
                f"ingested into {self.table}",
                f"  lines read:          {self.lines_read}",
                f"  records read:        {self.records_read}",
                f"  records written:     {self.records_written}",
                f"  duplicates skipped:  {self.duplicates_skipped}",
                f"  other categories:    {counts(self.skipped_by_category)}",
                f"  rejected:            {counts(self.rejected_by_reason)}",
                f"  event dates:         {dates}",
                *([f"  corrupt files:       {self._corrupt()}"] if self.corrupt_files else []),
                f"  time taken:          {self.seconds:.1f}s",
            ]
        )


def _text(name: str) -> Column:
    return F.col(f"p.{name}")


def _try_cast(name: str, sql_type: str) -> Column:
    # try_cast semantics regardless of spark.sql.ansi.enabled: an invalid value becomes null.
    return F.expr(f"try_cast(p.`{name}` AS {sql_type})")


def typed_properties() -> list[Column]:
    """``properties`` (parsed as text, in column ``p``) -> the typed columns of DeviceNetworkEvents."""
    cols = []
    for name, dtype in PROPERTY_COLUMNS:
        if name == "ReportId":
            col = F.coalesce(_try_cast("ReportId", "BIGINT"), _try_cast("ReportId_long", "BIGINT"))
        elif isinstance(dtype, T.StringType):
            col = _text(name)
        else:
            # Timestamps: ISO-8601 with any number of fractional digits; past six they are truncated.
            col = _try_cast(name, dtype.simpleString().upper())
        cols.append(col.alias(name))
    return cols


def read_lines(spark: SparkSession, source: str) -> DataFrame:
    """Every non-blank line of every file under ``source`` (column ``line``).

    ``recursiveFileLookup`` also turns off partition discovery, so ``y=2026/m=00`` folders do not
    become columns. Spark skips files and folders whose names start with ``_`` or ``.``.
    """
    text = spark.read.option("recursiveFileLookup", "true").text(source)
    return _non_blank(text.select(F.col("value").alias("line")))


def capture_files(spark: SparkSession, source: str) -> list[str]:
    """The ``.avro`` files under ``source``, listed without reading any of them."""
    reader = spark.read.format("avro").schema(CAPTURE_SCHEMA).option("recursiveFileLookup", "true")
    return sorted(reader.option("pathGlobFilter", "*.avro").load(source).inputFiles())


def read_bodies(spark: SparkSession, files: list[str]) -> DataFrame:
    """The message bodies of Event Hubs Capture files, as the lines ``read_lines`` gives."""
    if not files:
        return empty_frame(spark, T.StructType([T.StructField("line", T.StringType())]))
    bodies = spark.read.format("avro").schema(CAPTURE_SCHEMA).load(files)
    return _non_blank(bodies.select(F.col("Body").cast("string").alias("line")))


def failed_file(spark: SparkSession, error: Exception, files: list[str]) -> str | None:
    """The file of ``files`` that failed the read: the one Spark's error names (Spark 4 says
    ``reading file <path>``), else (Spark 3.5 names none) the first that cannot be read alone.
    None when every file reads: the error was not a bad file's."""
    text = str(error)
    named = [f for f in files if f in text or urlparse(f).path in text]
    if named:
        return max(named, key=len)
    for name in files:  # after a failure only: each file read once, by itself
        try:
            read_bodies(spark, [name]).count()
        except Exception:
            return name
    return None


def _non_blank(lines: DataFrame) -> DataFrame:
    """The rows of ``lines`` whose ``line`` holds more than blanks and a byte-order mark."""
    return lines.where(F.length(F.trim(_without_bom("line"))) > 0)


def _without_bom(name: str) -> Column:
    return F.regexp_replace(name, "^\ufeff", "")


def classify_records(lines: DataFrame) -> DataFrame:
    """Lines -> one row per record (or per rejected line) with its fate and typed columns.

    Columns: ``_status`` (``ok``, ``empty_batch``, ``other_category`` or a rejection reason),
    ``_category`` (for ``other_category`` rows), ``_line_start`` (1 on the first row of each line,
    so the lines can be counted after the explode), then the bronze columns without ``EventKey``.
    """
    parsed = lines.select(F.from_json(_without_bom("line"), LINE_SCHEMA, _JSON_OPTIONS).alias("l"))
    is_batch = F.col("l.records").isNotNull()
    items = F.when(is_batch, F.col("l.records")).otherwise(F.array(F.lit(None).cast(_S)))
    own = F.struct(*[F.col(f"l.{n}").alias(n) for n in RECORD_SCHEMA.fieldNames()])
    record = F.when(is_batch, F.from_json("item", RECORD_SCHEMA, _JSON_OPTIONS)).otherwise(own)
    exploded = parsed.select("l", F.posexplode_outer(items).alias("pos", "item")).select(
        F.col("l").getField(CORRUPT).alias("line_corrupt"), "pos", record.alias("r")
    )
    category = F.col("r.category")
    ours = F.lower(F.trim(category)) == F.lit(CATEGORY.lower())
    with_props = exploded.select(
        "*",
        # Only this table's records are parsed further; other categories are just counted.
        F.when(ours, F.from_json("r.properties", PROPERTIES_SCHEMA, _JSON_OPTIONS)).alias("p"),
    )
    status = (
        F.when(F.col("pos").isNull(), F.lit(EMPTY_BATCH))
        .when(F.col("line_corrupt").isNotNull(), F.lit("malformed_line"))
        .when(F.col("r").isNull() | F.col(f"r.{CORRUPT}").isNotNull(), F.lit("malformed_record"))
        .when(F.coalesce(F.trim(category), F.lit("")) == "", F.lit("missing_category"))
        .when(~ours, F.lit(OTHER_CATEGORY))
        .when(F.col(f"p.{CORRUPT}").isNotNull(), F.lit("malformed_properties"))
        .when(F.col("p.Timestamp").isNull(), F.lit("missing_timestamp"))
        .when(_try_cast("Timestamp", "TIMESTAMP").isNull(), F.lit("unparseable_timestamp"))
        .otherwise(F.lit(OK))
    )
    out = with_props.select(
        status.alias("_status"),
        F.when(status == OTHER_CATEGORY, category).alias("_category"),
        (F.coalesce(F.col("pos"), F.lit(0)) == 0).cast("int").alias("_line_start"),
        *typed_properties(),
        F.col("r.tenantId").alias("TenantId"),
        F.expr("try_cast(r.time AS TIMESTAMP)").alias("IngestTime"),
    )
    # The UTC date, whatever the session time zone: days since the epoch of the UTC instant.
    event_date = F.expr("date_from_unix_date(CAST(floor(unix_micros(Timestamp) / 86400000000) AS INT))")
    return out.withColumn(PARTITION_COLUMN, event_date)


def event_key() -> Column:
    """SHA-256 of Defender's key ``(DeviceId, ReportId, Timestamp)``, or of the typed record.

    Timestamps enter as microseconds (``to_json`` would write milliseconds only); null fields are
    left out explicitly so the key does not depend on the session's JSON settings.
    """
    micros = F.expr("unix_micros(Timestamp)").alias("Timestamp")
    opts = {"ignoreNullFields": "true"}
    defender = F.to_json(F.struct("DeviceId", "ReportId", micros), opts)
    content = [micros if n == "Timestamp" else F.col(n) for n, _ in PROPERTY_COLUMNS]
    canonical = F.to_json(F.struct(*content, F.col("TenantId")), opts)
    return F.sha2(F.when(F.col("ReportId").isNotNull(), defender).otherwise(canonical), 256)


def bronze_rows(records: DataFrame) -> DataFrame:
    """The accepted records as bronze rows, keyed and deduplicated within the batch."""
    return (
        records.where(F.col("_status") == OK)
        .withColumn(KEY_COLUMN, event_key())
        .select(*BRONZE_SCHEMA.fieldNames())
        .dropDuplicates([PARTITION_COLUMN, KEY_COLUMN])
    )


def check_table(spark: SparkSession, path: str) -> bool:
    """Whether a bronze table exists at ``path``; an error if something else is there."""
    from delta.tables import DeltaTable

    if not path_exists(spark, path) or list_names(spark, path) == []:  # absent, or an empty directory
        return False
    if not DeltaTable.isDeltaTable(spark, path):
        raise ConfigError(f"output {path} exists and is not a Delta table; choose another path")
    table = DeltaTable.forPath(spark, path)
    found = {f.name: f.dataType for f in table.toDF().schema.fields}
    wrong = [
        f"{f.name} ({found[f.name].simpleString() if f.name in found else 'missing'})"
        for f in BRONZE_SCHEMA.fields
        if found.get(f.name) != f.dataType
    ]
    if wrong:
        raise ConfigError(f"output {path} is not a bronze table of fwpolicy ingest: {', '.join(wrong)}")
    return True


def create_table(spark: SparkSession, path: str) -> None:
    """An empty bronze table partitioned by ``EventDate`` (a no-op if one appeared meanwhile)."""
    from delta.tables import DeltaTable

    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(BRONZE_SCHEMA)
        .partitionedBy(PARTITION_COLUMN)
        .execute()
    )
    log.info("created bronze table %s partitioned by %s", path, PARTITION_COLUMN)


def merge_new(spark: SparkSession, path: str, rows: DataFrame, first: dt.date, last: dt.date) -> int:
    """Insert the rows whose key is not in the table yet; return how many were inserted.

    The literal ``EventDate`` range lets Delta skip every partition outside the batch's dates
    before it joins on the key. SQL ``MERGE`` is used because it returns the merge's own metrics
    (the Python ``DeltaMergeBuilder.execute`` returns nothing, and a merge that inserts nothing
    makes no commit whose history could be read).
    """
    view = f"fwpolicy_ingest_{uuid.uuid4().hex}"
    table = "delta.`" + path.replace("`", "``") + "`"
    rows.createOrReplaceTempView(view)
    try:
        metrics = spark.sql(
            f"MERGE INTO {table} AS t USING {view} AS s "
            f"ON t.{PARTITION_COLUMN} = s.{PARTITION_COLUMN} AND t.{KEY_COLUMN} = s.{KEY_COLUMN} "
            f"AND t.{PARTITION_COLUMN} BETWEEN DATE'{first.isoformat()}' AND DATE'{last.isoformat()}' "
            "WHEN NOT MATCHED THEN INSERT *"
        ).first()  # one row of metrics
    finally:
        spark.catalog.dropTempView(view)
    return int(metrics["num_inserted_rows"]) if metrics is not None else 0


def parse_stats(records: DataFrame) -> list:
    """One small aggregate of the parsed records: a row per status and skipped category."""
    return (
        records.groupBy("_status", "_category")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum("_line_start").alias("lines"),
            F.min(PARTITION_COLUMN).alias("first"),
            F.max(PARTITION_COLUMN).alias("last"),
        )
        .collect()  # a handful of rows: the statuses and the other categories seen
    )


def ingest(spark: SparkSession, source: str, output: str, input_format: str = "json") -> IngestResult:
    """Read the export under ``source`` and merge its new DeviceNetworkEvents into ``output``.

    ``input_format``: ``json`` (JSON lines, the storage account's and Event Hubs' shape) or
    ``avro`` (Event Hubs Capture)."""
    if input_format not in INPUT_FORMATS:
        raise ConfigError(f"input format must be one of {INPUT_FORMATS}, got {input_format!r}")
    began = time.monotonic()
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # zone-less times are UTC
    if not path_exists(spark, source):
        raise SourceError(f"source not found: {source}")
    if overlaps(output, source):
        raise ConfigError(
            f"output {output} and source {source} overlap; the table must live outside the export"
        )
    exists = check_table(spark, output)
    log.info("ingesting Defender export %s into %s", source, output)

    files = capture_files(spark, source) if input_format == "avro" else []
    corrupt: list[str] = []
    while True:
        raw = read_bodies(spark, files) if input_format == "avro" else read_lines(spark, source)
        records = classify_records(raw).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            stats = parse_stats(records)  # the files are read here, once
            break
        except Exception as e:
            records.unpersist()
            bad = failed_file(spark, e, files)
            if bad is None:
                raise
            # A corrupt Capture file: left out whole, named, and the others read again.
            log.warning("corrupt Avro file left out: %s (%s)", bad, str(e).strip().splitlines()[0][:200])
            corrupt.append(bad)
            files.remove(bad)
    try:
        lines = sum(int(r["lines"] or 0) for r in stats)
        by_status: dict[str, int] = {}
        skipped: dict[str, int] = {}
        first = last = None
        for r in stats:
            if r["_status"] == OTHER_CATEGORY:
                skipped[r["_category"]] = skipped.get(r["_category"], 0) + r["rows"]
            else:
                by_status[r["_status"]] = by_status.get(r["_status"], 0) + r["rows"]
            if r["_status"] == OK:
                first, last = r["first"], r["last"]
        accepted = by_status.pop(OK, 0)
        by_status.pop(EMPTY_BATCH, None)
        rejected = by_status
        record_rejects = sum(v for k, v in rejected.items() if k not in LINE_REASONS)
        records_read = accepted + sum(skipped.values()) + record_rejects

        if not exists:
            create_table(spark, output)
        written = 0
        if accepted:
            written = merge_new(spark, output, bronze_rows(records), first, last)
    finally:
        records.unpersist()

    result = IngestResult(
        table=output,
        lines_read=lines,
        records_read=records_read,
        records_written=written,
        duplicates_skipped=accepted - written,
        skipped_by_category=skipped,
        rejected_by_reason=rejected,
        seconds=time.monotonic() - began,
        first_date=first,
        last_date=last,
        corrupt_files=corrupt,
    )
    if rejected:
        log.warning("rejected from %s: %s", source, rejected)
    log.info("ingested %d of %d records into %s in %.1fs", written, records_read, output, result.seconds)
    return result
