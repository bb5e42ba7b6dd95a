"""Read the events of one window from a Delta table or a Parquet dataset.

The read is where most of a run's cost is, so it asks Spark for only what the query needs:
the columns it uses (column pruning) and, when the layout has a date partition column, only the
partitions of the window (partition pruning). The schema is checked before any work, with an
error that names the path, the column and the type, so a bad input never half-runs.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from fwpolicy.io.storage import path_exists

log = logging.getLogger(__name__)

# Columns the query reads, with the type it computes on. Other columns are ignored.
STRING_COLUMNS = (
    "DeviceId",
    "ActionType",
    "LocalIP",
    "RemoteIP",
    "RemoteIPType",
    "InitiatingProcessFolderPath",
)
# Columns whose Defender values are text the query compares (ConnectionSuccess, Loopback, an
# address, a path): a number or a flag there cannot hold its meaning, so it is refused rather than
# cast into text that no clause matches. DeviceId is an identity only: any scalar serves.
TEXT_COLUMNS = frozenset(
    {
        "ActionType",
        "LocalIP",
        "RemoteIP",
        "RemoteIPType",
        "InitiatingProcessFolderPath",
        "InitiatingProcessFileName",
        "InitiatingProcessCommandLine",
        "Protocol",
        "RemoteUrl",
    }
)
PORT_COLUMNS = ("LocalPort", "RemotePort")
REQUIRED_COLUMNS = ("Timestamp", *STRING_COLUMNS, *PORT_COLUMNS)
# Read when present: descriptors of the policy rows and inputs of the benign-traffic rules.
OPTIONAL_STRING_COLUMNS = (
    "InitiatingProcessFileName",
    "InitiatingProcessCommandLine",
    "Protocol",
    "RemoteUrl",
)

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_SCALAR = (T.StringType, T.BooleanType, *_INTEGRAL, T.FloatType, T.DoubleType, T.DecimalType)


class SourceError(ValueError):
    """The source cannot be read as DeviceNetworkEvents; the message says where and why."""


def widens_parquet(spark: SparkSession) -> bool:
    """Whether this Spark's Parquet reader widens integers (int32 files read as ``bigint``):
    Spark 4 does, Spark 3.5 refuses the read."""
    return int(spark.version.split(".")[0]) >= 4


# Integer columns the query reads as numbers or identities: read as bigint when they drift.
WIDENED_COLUMNS = frozenset({*PORT_COLUMNS, "DeviceId"})


def widened(schema: T.StructType) -> T.StructType:
    """``schema`` with the integers of ``WIDENED_COLUMNS`` narrower than ``bigint`` as ``bigint``
    (other columns keep the type found, which a type error must name)."""
    narrow = (T.ByteType, T.ShortType, T.IntegerType)
    return T.StructType(
        [
            T.StructField(f.name, T.LongType(), f.nullable)
            if f.name in WIDENED_COLUMNS and isinstance(f.dataType, narrow)
            else f
            for f in schema
        ]
    )


def open_parquet(spark: SparkSession, path: str) -> DataFrame:
    """A Parquet dataset, its integer columns read as ``bigint`` where Spark can widen them.

    Lakes written by different tools over months drift: ``RemotePort`` is int32 in one file and
    int64 in another, and Spark takes the dataset's schema from one of them. Read as ``bigint``,
    every file fits; ``conform_schema`` then brings ports to ``int`` with its range check. On
    Spark 3.5, which cannot widen, such a lake is refused in one line (``read_errors``)."""
    df = spark.read.parquet(path)
    if not widens_parquet(spark):
        return df
    schema = widened(df.schema)
    return df if schema == df.schema else spark.read.schema(schema).parquet(path)


def open_source(spark: SparkSession, path: str, source_format: str) -> DataFrame:
    """Open a Delta table or a Parquet dataset (plain or Hive-partitioned) lazily."""
    if not path_exists(spark, path):
        raise SourceError(f"source not found: {path}")
    try:
        if source_format == "delta":
            return spark.read.format("delta").load(path)
        if source_format == "parquet":
            return open_parquet(spark, path)
    except Exception as e:  # Spark's AnalysisException text is long; keep its first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"cannot read {source_format} source {path}: {first}") from e
    raise SourceError(f"unknown source format {source_format!r}; expected delta or parquet")


def _type_error(path: str, name: str, expected: str, found: T.DataType) -> SourceError:
    return SourceError(f"source {path}: column {name} has type {found.simpleString()}, expected {expected}")


def conform_schema(df: DataFrame, path: str) -> DataFrame:
    """Check the required columns and bring them to the types the query computes on.

    Safe casts only: integral or numeric-string ports become ``int``; ISO-8601 string
    timestamps become ``timestamp``; a scalar ``DeviceId`` becomes a string. A type that cannot
    be cast safely is an error naming the column, the expected type and the type found; so is a
    text column (``TEXT_COLUMNS``: ``ActionType``, the addresses, the path, ...) of another type,
    which casting would turn into text no clause of the query matches.

    Values that cannot be used are not dropped: the column ``Rejected`` names the reason
    (``null_timestamp``, ``timestamp_not_parseable``, ``port_not_a_number``,
    ``port_out_of_range``), and the run audit counts them.
    """
    fields = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in REQUIRED_COLUMNS if c not in fields]
    if missing:
        raise SourceError(
            f"source {path} lacks required column(s) {', '.join(missing)}; "
            f"DeviceNetworkEvents needs {', '.join(REQUIRED_COLUMNS)}"
        )
    cols: list[Column] = []
    reasons: list[Column] = []
    ts_type = fields["Timestamp"]
    if isinstance(ts_type, T.TimestampType):
        ts = F.col("Timestamp")
    elif isinstance(ts_type, (T.TimestampNTZType, T.DateType, T.StringType)):
        # NTZ and zone-less strings are read as UTC wall-clock time (the session is UTC).
        ts = F.try_to_timestamp(F.col("Timestamp"))  # an unparseable text is null, ANSI or not
    else:
        raise _type_error(path, "Timestamp", "timestamp", ts_type)
    cols.append(ts.alias("Timestamp"))
    reasons.append(F.when(F.col("Timestamp").isNull(), F.lit("null_timestamp")))
    reasons.append(F.when(ts.isNull(), F.lit("timestamp_not_parseable")))
    for name in (*STRING_COLUMNS, *(c for c in OPTIONAL_STRING_COLUMNS if c in fields)):
        if not isinstance(fields[name], _SCALAR):
            raise _type_error(path, name, "string", fields[name])
        if name in TEXT_COLUMNS and not isinstance(fields[name], T.StringType):
            raise SourceError(
                f"source {path}: column {name} has type {fields[name].simpleString()}, expected string: "
                f"it holds Defender's text values, which a {fields[name].simpleString()} cannot"
            )
        cols.append(F.col(name).cast("string").alias(name))
    for name in PORT_COLUMNS:
        t, raw = fields[name], F.col(name)
        if isinstance(t, T.IntegerType):
            port = raw
        elif isinstance(t, _INTEGRAL):
            port = F.when(raw.between(-(2**31), 2**31 - 1), raw.cast("int"))
            reasons.append(F.when(raw.isNotNull() & port.isNull(), F.lit("port_out_of_range")))
        elif isinstance(t, T.StringType):
            text = F.trim(raw)
            # try_cast semantics whatever spark.sql.ansi.enabled says: invalid text is null.
            port = F.expr(f"try_cast(trim(`{name}`) AS INT)")
            reasons.append(F.when((text != F.lit("")) & port.isNull(), F.lit("port_not_a_number")))
        else:
            raise _type_error(path, name, "int", t)
        cols.append(port.alias(name))
        reasons.append(F.when((port < 0) | (port > 65535), F.lit("port_out_of_range")))
    rejected = F.coalesce(*reasons).alias("Rejected")
    rest = [F.col(c) for c in df.columns if c not in {*REQUIRED_COLUMNS, *OPTIONAL_STRING_COLUMNS}]
    return df.select(*cols, rejected, *rest)


# What Spark's Parquet reader says when files disagree on a column's type (3.5, then 4), or
# one is corrupt.
_CONVERSION = (
    re.compile(
        r"Parquet column cannot be converted in file (\S+?)\.? "
        r"Column: \[([^\]]*)\], Expected: (\S+?), Found: (\w+)"
    ),
    re.compile(
        r"while reading file (\S+?)\. Data type mismatches when reading Parquet column "
        r"\[([^\]]*)\]\. Expected Spark type (\S+?), actual Parquet type (\w+)"
    ),
)
_CORRUPT = (
    "corrupted file",
    "is not a Parquet file",
    "Could not read footer",
    "can not read class org.apache.parquet.format",
)
MAX_NAMED_FILES = 3


def unreadable_files(spark: SparkSession, events: DataFrame) -> list[str]:
    """The files of ``events``' source whose Parquet footer cannot be read (at most a few).

    Asked only after a read failed, since Spark 3.5 does not name the file: each file's footer
    is read once, by the driver."""
    bad = []
    for name in events.inputFiles():
        try:
            spark.read.parquet(name).schema  # noqa: B018 (reads the footer)
        except Exception:
            bad.append(name)
            if len(bad) == MAX_NAMED_FILES:
                break
    return bad


@contextmanager
def read_errors(spark: SparkSession, path: str, events: DataFrame) -> Iterator[None]:
    """Turn the reader's failures on bad files of the source into one ``SourceError`` line that
    names the file: files that disagree on a column's type, and corrupt files."""
    try:
        yield
    except SourceError:
        raise
    except Exception as e:
        text = str(e)
        found = next((m for m in (p.search(text) for p in _CONVERSION) if m), None)
        if found:
            file, column, expected, stored = found.groups()
            raise SourceError(
                f"source {path}: file {file} stores {column} as {stored} while the dataset's schema "
                f"(from another file) has {expected}: its files disagree on the column's type"
            ) from e
        if any(marker in text for marker in _CORRUPT):
            files = unreadable_files(spark, events)
            named = ", ".join(files) if files else "one of the window's files (not found again)"
            raise SourceError(
                f"source {path}: corrupt Parquet file {named}: its footer cannot be read"
            ) from e
        raise


def partition_column(df: DataFrame, candidates: tuple[str, ...]) -> str | None:
    """The first configured date partition column the source actually has, if any."""
    for name in candidates:
        if name in df.columns and isinstance(df.schema[name].dataType, (T.DateType, T.StringType)):
            return name
    return None


def window_filter(
    df: DataFrame, start: dt.date, end: dt.date, partition_columns: tuple[str, ...] = ()
) -> DataFrame:
    """Keep ``start <= Timestamp < end`` (UTC), pruning date partitions when there are some.

    The partition filter is widened by a day on each side, so a partition column written in
    another time zone still never drops a row; the ``Timestamp`` filter is the exact one.
    Rows whose ``Timestamp`` is unusable are kept so the audit can count them: those of the
    window's own partitions when the source is date-partitioned, else all of them.
    """
    lo = dt.datetime.combine(start, dt.time(), tzinfo=dt.timezone.utc)
    hi = dt.datetime.combine(end, dt.time(), tzinfo=dt.timezone.utc)
    part = partition_column(df, partition_columns)
    unusable_ts = F.col("Timestamp").isNull()
    if part is not None:
        margin = dt.timedelta(days=1)

        def day(d: dt.date) -> Column:
            is_text = isinstance(df.schema[part].dataType, T.StringType)
            return F.lit(d.isoformat()) if is_text else F.lit(d)

        df = df.where((F.col(part) >= day(start - margin)) & (F.col(part) < day(end + margin)))
        unusable_ts = unusable_ts & (F.col(part) >= day(start)) & (F.col(part) < day(end))
        log.info("pruning partitions on %s to [%s, %s)", part, start - margin, end + margin)
    in_window = (F.col("Timestamp") >= F.lit(lo)) & (F.col("Timestamp") < F.lit(hi))
    return df.where(in_window | unusable_ts)


def read_window(
    spark: SparkSession,
    path: str,
    source_format: str,
    start: dt.date,
    end: dt.date,
    partition_columns: tuple[str, ...] = ("EventDate",),
    extra_columns: tuple[str, ...] = (),
) -> DataFrame:
    """The events of ``[start, end)`` with the required columns (and any present extras) only."""
    raw = open_source(spark, path, source_format)
    part = partition_column(raw, partition_columns)
    wanted = (*REQUIRED_COLUMNS, *OPTIONAL_STRING_COLUMNS, *extra_columns)
    keep = [c for c in wanted if c in raw.columns]
    if part is not None and part not in keep:
        keep.append(part)  # passed through uncast, so its filter stays a partition filter
    events = conform_schema(raw.select(*keep), path)
    return window_filter(events, start, end, partition_columns)
