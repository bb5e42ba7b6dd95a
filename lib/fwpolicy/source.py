"""Read the events of one window from a Delta table or a Parquet dataset.

The read is where most of a run's cost is, so it asks Spark for only what the query needs:
the columns it uses (column pruning) and, when the layout has a date partition column, only the
partitions of the window (partition pruning). The schema is checked before any work, with an
error that names the path, the column and the type, so a bad input never half-runs.
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

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
PORT_COLUMNS = ("LocalPort", "RemotePort")
REQUIRED_COLUMNS = ("Timestamp", *STRING_COLUMNS, *PORT_COLUMNS)

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_SCALAR = (T.StringType, T.BooleanType, *_INTEGRAL, T.FloatType, T.DoubleType, T.DecimalType)


class SourceError(ValueError):
    """The source cannot be read as DeviceNetworkEvents; the message says where and why."""


def path_exists(spark: SparkSession, path: str) -> bool:
    """Ask the Hadoop FileSystem of the path, so ``s3a://``, ``abfss://`` and local paths all work."""
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return bool(fs.exists(hpath))


def open_source(spark: SparkSession, path: str, source_format: str) -> DataFrame:
    """Open a Delta table or a Parquet dataset (plain or Hive-partitioned) lazily."""
    if not path_exists(spark, path):
        raise SourceError(f"source not found: {path}")
    try:
        if source_format == "delta":
            return spark.read.format("delta").load(path)
        if source_format == "parquet":
            return spark.read.parquet(path)
    except Exception as e:  # Spark's AnalysisException text is long; keep its first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"cannot read {source_format} source {path}: {first}") from e
    raise SourceError(f"unknown source format {source_format!r}; expected delta or parquet")


def _type_error(path: str, name: str, expected: str, found: T.DataType) -> SourceError:
    return SourceError(f"source {path}: column {name} has type {found.simpleString()}, expected {expected}")


def conform_schema(df: DataFrame, path: str) -> DataFrame:
    """Check the required columns and bring them to the types the query computes on.

    Safe casts only: integral or numeric-string ports become ``int`` (a value that is not a port
    number becomes null, which no ``where`` clause passes); ISO-8601 string timestamps become
    ``timestamp``; scalar identifiers become strings. Anything else is an error naming the column.
    """
    fields = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in REQUIRED_COLUMNS if c not in fields]
    if missing:
        raise SourceError(
            f"source {path} lacks required column(s) {', '.join(missing)}; "
            f"DeviceNetworkEvents needs {', '.join(REQUIRED_COLUMNS)}"
        )
    cols = []
    ts_type = fields["Timestamp"]
    if isinstance(ts_type, T.TimestampType):
        cols.append(F.col("Timestamp"))
    elif isinstance(ts_type, (T.TimestampNTZType, T.DateType, T.StringType)):
        # NTZ and strings are read as UTC wall-clock time, the convention of Defender exports.
        cols.append(F.to_timestamp(F.col("Timestamp")).alias("Timestamp"))
    else:
        raise _type_error(path, "Timestamp", "timestamp", ts_type)
    for name in STRING_COLUMNS:
        if not isinstance(fields[name], _SCALAR):
            raise _type_error(path, name, "string", fields[name])
        cols.append(F.col(name).cast("string").alias(name))
    for name in PORT_COLUMNS:
        t = fields[name]
        if isinstance(t, T.IntegerType):
            cols.append(F.col(name))
        elif isinstance(t, (*_INTEGRAL, T.StringType)):
            # try_cast semantics regardless of spark.sql.ansi.enabled: invalid text is null.
            cols.append(F.expr(f"try_cast(`{name}` AS INT)").alias(name))
        else:
            raise _type_error(path, name, "int", t)
    return df.select(*cols, *[F.col(c) for c in df.columns if c not in REQUIRED_COLUMNS])


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
    """
    lo = dt.datetime.combine(start, dt.time(), tzinfo=dt.timezone.utc)
    hi = dt.datetime.combine(end, dt.time(), tzinfo=dt.timezone.utc)
    part = partition_column(df, partition_columns)
    if part is not None:
        margin = dt.timedelta(days=1)
        lo_p, hi_p = start - margin, end + margin
        if isinstance(df.schema[part].dataType, T.StringType):
            lo_v, hi_v = F.lit(lo_p.isoformat()), F.lit(hi_p.isoformat())
        else:
            lo_v, hi_v = F.lit(lo_p), F.lit(hi_p)
        df = df.where((F.col(part) >= lo_v) & (F.col(part) <= hi_v))
        log.info("pruning partitions on %s to [%s, %s]", part, lo_p, hi_p)
    return df.where((F.col("Timestamp") >= F.lit(lo)) & (F.col("Timestamp") < F.lit(hi)))


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
    keep = [c for c in (*REQUIRED_COLUMNS, *extra_columns) if c in raw.columns]
    if part is not None and part not in keep:
        keep.append(part)  # passed through uncast, so its filter stays a partition filter
    events = conform_schema(raw.select(*keep), path)
    return window_filter(events, start, end, partition_columns)
